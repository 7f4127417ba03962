"""Calibrated int8 engine (issue 16) beside the fp32 ONNX engine, Lite0 @224, measured in one run on this machine.

    .venv/bin/python bench/int8.py [--rounds 3] [--sets hymenoptera,cifar10,mnist,usps]

Per data set, the transferkit CLI trains a linear probe with ``--engine onnx`` and ``--engine onnx-int8`` (the int8
engine calibrated on that run's own images, as a user gets it; each set has its own cache, the fp32 engine copied
in) -> probe accuracy. On the other sets, a third run uses the engine calibrated on hymenoptera: what a shared
cache gives, since a network keeps the first int8 engine calibrated for it. Then, in this process, both engines
extract the same files end to end (decode included, engines built, feature cache off), interleaved round by
round, so load from other processes hits both alike -> img/s and the per-round ratio; and the features of both
(from the runs' caches) -> cosine distance to fp32. Results: bench/results/int8.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from run import DATA, save_results, table, timed, transferkit
from transferkit.features.engines import OnnxEngine
from transferkit.features.quantize import STATIC_QDQ, cosine_distance, cpu_summary
from transferkit.modalities.image.backbones import resolve_backbone
from transferkit.modalities.image.features import FeatureSource, extract_features

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif")
# name: (source folder, eval folder name, train per class, eval per class (taken after the train files))
SUBSETS = {"cifar10": (DATA / "cifar10", "test", 100, 50),
           "mnist": (DATA / "digits_mnist_usps" / "mnist", None, 100, 50),
           "usps": (DATA / "digits_mnist_usps" / "usps", None, 80, 50)}


def subset(name: str, work: Path) -> Path:
    """``train/<class>/`` and ``test/<class>/`` of symbolic links: the first files of each class, sorted."""
    source, eval_dir, n_train, n_eval = SUBSETS[name]
    root = work / name
    for cls in sorted(p.name for p in (source / ("train" if eval_dir else "")).iterdir() if p.is_dir()):
        train_files = sorted((source / ("train" if eval_dir else "") / cls).iterdir())
        eval_files = sorted((source / eval_dir / cls).iterdir())[:n_eval] if eval_dir else \
            train_files[n_train:n_train + n_eval]
        for split, files in (("train", train_files[:n_train]), ("test", eval_files)):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for f in files:
                (root / split / cls / f.name).symlink_to(f)
    return root


def image_files(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def probe(data: Path, engine: str, cache: Path, out: Path) -> dict:
    """One CLI linear probe: its accuracy (val when the set has a val/, else test) and its extraction stats."""
    seconds, stdout, rss = timed(transferkit(str(data), "--engine", engine, "--out", str(out), cache=cache))
    metrics = json.loads(stdout)
    scored = metrics.get("test") or metrics["val"]
    return {"accuracy": scored["accuracy"], "scored_on": "test" if "test" in metrics else "val", "n": scored["n"],
            "correct": scored["correct"], "process_s": round(seconds, 1), "peak_rss_mb": rss,
            "embeddings": metrics["embeddings"]}


def flips(a: dict, b: dict) -> int:
    """Scored items one run gets right and the other wrong: the accuracy difference is their balance."""
    return sum(x != y for x, y in zip(a["correct"], b["correct"]))


def distances(source: FeatureSource, files: list[str], cache: Path, int8_cache: Path) -> dict:
    """Cosine distance of int8 features to fp32 ones, per file (both read back from the runs' caches)."""
    fp32 = extract_features(source, files, engine="onnx", cache_dir=cache, show_progress=False)
    int8 = extract_features(source, files, engine="onnx-int8", cache_dir=int8_cache, show_progress=False)
    assert (fp32.ok == int8.ok).all()
    d = cosine_distance(fp32.features, int8.features)
    return {"max": float(d.max()), "mean": float(d.mean()), "p99": float(np.quantile(d, 0.99)),
            "files": int(len(d)), "extracted_not_cached": fp32.extracted + int8.extracted}


# Throughput contenders: (label, engine, whether ONNX Runtime's threads spin). The int8 engine does not spin (it
# leaves the cores to the decoding threads); fp32 does, as it ships, and is also measured without, so the ratio
# to the better of the two fp32 settings is in the table too.
CONTENDERS = (("onnx", "onnx", True), ("onnx-int8", "onnx-int8", False), ("onnx, no spinning", "onnx", False))


def extract_timed(source: FeatureSource, files: list[str], cache: Path, engine: str, spinning: bool) -> float:
    OnnxEngine.spinning = spinning  # a new session per call: the class setting is read when it opens
    try:
        result = extract_features(source, files, engine=engine, cache_dir=cache, use_cache=False, show_progress=False)
    finally:
        OnnxEngine.spinning = True
    assert result.engine == engine and result.export_seconds == 0
    return len(files) / result.seconds


def throughput(source: FeatureSource, files: list[str], cache: Path, rounds: int) -> dict:
    """img/s end to end from files, engines already built, interleaved round by round."""
    for _, engine, spinning in CONTENDERS:  # warm-up: page cache, sessions, thread pools
        extract_timed(source, files[:64], cache, engine, spinning)
    rates: dict[str, list[float]] = {label: [] for label, _, _ in CONTENDERS}
    for _ in range(rounds):
        for label, engine, spinning in CONTENDERS:
            rates[label].append(extract_timed(source, files, cache, engine, spinning))
    ratios = [i / f for f, i in zip(rates["onnx"], rates["onnx-int8"])]
    best_fp32 = [i / max(f, g) for f, g, i in zip(rates["onnx"], rates["onnx, no spinning"], rates["onnx-int8"])]
    return {"images": len(files), "rounds": rounds, "img_s": {e: [round(r, 1) for r in v] for e, v in rates.items()},
            "median_img_s": {e: round(statistics.median(v), 1) for e, v in rates.items()},
            "ratio_per_round": [round(r, 2) for r in ratios], "median_ratio": round(statistics.median(ratios), 2),
            "median_ratio_to_best_fp32": round(statistics.median(best_fp32), 2)}


def bench_set(name: str, data: Path, work: Path, source: FeatureSource, fp32_engines: Path, hym_cache: Path | None,
              rounds: int) -> dict:
    cache = work / f"cache-{name}"
    shutil.copytree(fp32_engines, cache / "engines")  # the fp32 engine is allowed to be cached; int8 is not
    row: dict = {"data": str(data), "fp32": probe(data, "onnx", cache, work / f"{name}-fp32"),
                 "int8": probe(data, "onnx-int8", cache, work / f"{name}-int8")}
    files = image_files(data)
    row["int8"]["cosine_distance"] = distances(source, files, cache, cache)
    if hym_cache is not None:  # a shared cache: this network's first int8 engine was calibrated on hymenoptera
        row["int8_hymenoptera_calibrated"] = probe(data, "onnx-int8", hym_cache, work / f"{name}-cross")
        row["int8_hymenoptera_calibrated"]["cosine_distance"] = distances(source, files, cache, hym_cache)
    for key in ("int8", "int8_hymenoptera_calibrated"):
        if key in row:
            row[key]["flips_vs_fp32"] = flips(row["fp32"], row[key])
    if rounds:
        row["throughput"] = throughput(source, files, cache, rounds)
    return row


def report(results: dict) -> None:
    rows = []
    for name, row in results["sets"].items():
        fp32 = row["fp32"]
        for label, key in (("onnx (fp32)", "fp32"), ("onnx-int8", "int8"),
                           ("onnx-int8, calibrated on hymenoptera", "int8_hymenoptera_calibrated")):
            if key not in row:
                continue
            r, d, tp = row[key], row[key].get("cosine_distance"), row.get("throughput")
            rate = tp["median_img_s"][{"fp32": "onnx", "int8": "onnx-int8"}[key]] if tp and key in ("fp32", "int8") \
                else None
            ratio = f"{tp['median_ratio']:.2f} ({tp['median_ratio_to_best_fp32']:.2f})" if tp and key == "int8" else "-"
            rows.append([f"{name}: {label}", f"{rate:.0f}" if rate else "-", ratio,
                         f"{r['accuracy']:.3f} ({r['scored_on']} {r['n']})",
                         f"{100 * (r['accuracy'] - fp32['accuracy']):+.1f}" if key != "fp32" else "-",
                         str(r["flips_vs_fp32"]) if key != "fp32" else "-",
                         f"{d['max']:.4f}" if d else "-", f"{d['mean']:.4f}" if d else "-",
                         f"{r['embeddings']['export_seconds']:.1f}" if key == "int8" else "-"])
        if row.get("throughput"):
            rows.append([f"{name}: onnx (fp32), threads not spinning",
                         f"{row['throughput']['median_img_s']['onnx, no spinning']:.0f}"] + ["-"] * 7)
    table("int8 vs fp32 ONNX Runtime, EfficientNet-Lite0 @224: img/s end to end from files (median of interleaved "
          "rounds; x fp32: median per-round ratio, in brackets to the better fp32 setting), linear-probe accuracy "
          "from the CLI (flips: scored items right in one run, wrong in the other), feature cosine distance to fp32, "
          "one-off calibration + quantisation seconds",
          ["set: engine", "img/s", "x fp32", "probe acc", "pts", "flips", "max cos d", "mean cos d", "build s"], rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds (0: none)")
    parser.add_argument("--sets", default="hymenoptera,cifar10,mnist,usps")
    parser.add_argument("--throughput-sets", default="hymenoptera,cifar10")
    args = parser.parse_args()
    import onnxruntime

    results: dict = {"machine_cores": os.cpu_count(), "onnxruntime": onnxruntime.__version__,
                     "cpu": cpu_summary(), "int8_kernels": STATIC_QDQ.kernels().tag,
                     "load_average_before": [round(x, 2) for x in os.getloadavg()], "sets": {}}
    print(f"machine: {cpu_summary()} (int8 kernels {STATIC_QDQ.kernels().tag}), load average "
          f"{os.getloadavg()[0]:.2f}; data: {DATA}")
    source = FeatureSource.from_spec(resolve_backbone("efficientnet_lite0"))
    work = Path(tempfile.mkdtemp(prefix="transferkit-int8-"))
    try:
        fp32_engines = work / "fp32-engines"
        extract_features(source, image_files(DATA / "hymenoptera_data")[:2], engine="onnx", cache_dir=fp32_engines,
                         use_cache=False, show_progress=False)  # export once
        fp32_engines = fp32_engines / "engines"
        hym_cache = None
        for name in args.sets.split(","):
            data = DATA / "hymenoptera_data" if name == "hymenoptera" else subset(name, work)
            rounds = args.rounds if name in args.throughput_sets.split(",") else 0
            started = time.perf_counter()
            results["sets"][name] = bench_set(name, data, work, source, fp32_engines, hym_cache, rounds)
            results["sets"][name]["bench_s"] = round(time.perf_counter() - started, 1)
            hym_cache = work / "cache-hymenoptera" if (work / "cache-hymenoptera").is_dir() else None
        results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results)
    save_results(results, "int8.json")


if __name__ == "__main__":
    sys.exit(main())
