"""int8 text encoder (issue 16, ``--engine onnx-int8`` for text) beside fp32 ONNX, all-MiniLM-L6-v2, one run.

    .venv/bin/python bench/int8_text.py [--datasets rt_polarity trec] [--rounds 3] [--threads 1]

Per data set, the transferkit CLI trains a linear probe (``train train.csv --test-data test.csv``) with
``--engine onnx`` and with ``--engine onnx-int8``, each in its own process and cache folder (the fp32 engine copied
into both; the int8 engine is built by its run, checked on that run's training texts) -> test accuracy and the
test texts one gets right and the other wrong. Then, in this process, both engines encode the same pre-tokenised
test texts (length-sorted batches of 64, ``--threads`` ONNX Runtime threads: this machine's other core may be busy),
interleaved round by round so load from other processes hits both alike -> sentences/s and the per-round ratio;
and the probe features of every train and test text, read back from the runs' caches -> cosine distance to fp32.
Results: bench/results/int8_text.json.
"""

from __future__ import annotations

import argparse
import csv
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transferkit.config import RunConfig  # noqa: E402
from transferkit.features.quantize import TEXT_DYNAMIC, cosine_distance, cpu_summary  # noqa: E402
from transferkit.modalities import TEXT  # noqa: E402
from transferkit.modalities.text.embed import embed_texts, padded_batches  # noqa: E402
from transferkit.modalities.text.encoder import plan_text_engine  # noqa: E402
from transferkit.strategies import parse_strategy  # noqa: E402

ENGINES = ("onnx", "onnx-int8")


def texts_of(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def probe(data: Path, engine: str, cache: Path, out: Path) -> dict:
    """One CLI linear probe: test accuracy, which test texts it got right, and its embedding stats."""
    seconds, stdout, rss = timed(transferkit(str(data / "train.csv"), "--test-data", str(data / "test.csv"),
                                             "--engine", engine, "--out", str(out), cache=cache))
    metrics = json.loads(stdout)
    return {"accuracy": metrics["test"]["accuracy"], "n": metrics["test"]["n"], "correct": metrics["test"]["correct"],
            "val_accuracy": metrics["val"]["accuracy"], "process_s": round(seconds, 1), "peak_rss_mb": rss,
            "embeddings": metrics["embeddings"]}


def distances(spec, texts: list[str], caches: dict[str, Path]) -> dict:
    """Cosine distance of int8 probe features to fp32 ones, per text (both read back from the runs' caches)."""
    max_length = RunConfig().max_length
    fp32, int8 = (embed_texts(spec, texts, max_length=max_length, engine=engine, cache_dir=caches[engine],
                              show_progress=False) for engine in ENGINES)
    d = cosine_distance(fp32.features, int8.features)
    return {"max": float(d.max()), "mean": float(d.mean()), "p99": float(np.quantile(d, 0.99)), "texts": len(d),
            "encoded_not_cached": fp32.extracted + int8.extracted}


def throughput(spec, texts: list[str], caches: dict[str, Path], rounds: int, threads: int) -> dict:
    """Sentences/s of both engines on the same pre-tokenised batches, interleaved round by round."""
    tokenizer = spec.load_tokenizer()
    encoded = tokenizer.encode(texts, RunConfig().max_length)
    batches = [(ids, mask) for _, ids, mask in padded_batches(encoded, tokenizer.pad_token_id, 64)]
    engines = {}
    for engine in ENGINES:
        opened = plan_text_engine(spec, engine, caches[engine]).open()  # the runs' own engine files
        engines[engine] = type(opened)(opened.path, threads)
    for engine in engines.values():  # warm-up: sessions, thread pools
        engine(*batches[0])
    rates: dict[str, list[float]] = {engine: [] for engine in ENGINES}
    for _ in range(rounds):
        for name, engine in engines.items():
            start = time.perf_counter()
            for ids, mask in batches:
                engine(ids, mask)
            rates[name].append(len(texts) / (time.perf_counter() - start))
    ratios = [i / f for f, i in zip(rates["onnx"], rates["onnx-int8"])]
    return {"texts": len(texts), "rounds": rounds, "threads": threads,
            "sentences_s": {e: [round(r, 1) for r in v] for e, v in rates.items()},
            "median_sentences_s": {e: round(statistics.median(v), 1) for e, v in rates.items()},
            "ratio_per_round": [round(r, 2) for r in ratios], "median_ratio": round(statistics.median(ratios), 2)}


def bench_set(name: str, work: Path, spec, fp32_engines: Path, rounds: int, threads: int) -> dict:
    data = DATA / name
    caches = {engine: work / f"cache-{name}-{engine}" for engine in ENGINES}
    for cache in caches.values():
        shutil.copytree(fp32_engines, cache / "engines")  # the fp32 engine may be cached; int8 is built by its run
    row = {engine: probe(data, engine, caches[engine], work / f"{name}-{engine}") for engine in ENGINES}
    row["flips"] = sum(a != b for a, b in zip(row["onnx"]["correct"], row["onnx-int8"]["correct"]))
    for engine in ENGINES:
        del row[engine]["correct"]
    train, test = texts_of(data / "train.csv"), texts_of(data / "test.csv")
    row["cosine_distance"] = distances(spec, train + test, caches)
    row["throughput"] = throughput(spec, test, caches, rounds, threads)
    return row


def report(results: dict) -> None:
    rows = []
    for name, row in results["sets"].items():
        tp, d = row["throughput"], row["cosine_distance"]
        for engine in ENGINES:
            r = row[engine]
            int8 = engine == "onnx-int8"
            rows.append([f"{name}: {engine}", f"{r['accuracy']:.4f} ({r['n']})",
                         f"{100 * (r['accuracy'] - row['onnx']['accuracy']):+.1f}" if int8 else "-",
                         str(row["flips"]) if int8 else "-", f"{tp['median_sentences_s'][engine]:.0f}",
                         f"{tp['median_ratio']:.2f}" if int8 else "-", f"{d['max']:.4f}" if int8 else "-",
                         f"{d['mean']:.4f}" if int8 else "-",
                         f"{r['embeddings']['export_seconds']:.1f}" if int8 else "-"])
    table("int8 (dynamic, per-channel weights) vs fp32 ONNX Runtime, all-MiniLM-L6-v2 probe features (4 layers): "
          "CLI linear-probe test accuracy (flips: test texts right in one run, wrong in the other), sentences/s "
          "of the engines alone on the test texts (median of interleaved rounds; x fp32: median per-round ratio), "
          "cosine distance to fp32 over train + test texts, int8 build seconds (fp32 export was cached)",
          ["set: engine", "test acc", "pts", "flips", "sent/s", "x fp32", "max cos d", "mean cos d", "build s"], rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["rt_polarity", "trec"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for the sentences/s rounds")
    args = parser.parse_args()
    import onnxruntime

    results: dict = {"machine_cores": os.cpu_count(), "onnxruntime": onnxruntime.__version__,
                     "cpu": cpu_summary(), "int8_kernels": TEXT_DYNAMIC.kernels().tag,
                     "load_average_before": [round(x, 2) for x in os.getloadavg()], "sets": {}}
    print(f"machine: {cpu_summary()} (int8 kernels {TEXT_DYNAMIC.kernels().tag}), load average "
          f"{os.getloadavg()[0]:.2f}; data: {DATA}")
    config = RunConfig(backbone=TEXT.default_backbone)
    spec = TEXT.resolve(config, parse_strategy(config.strategy))  # what a default CLI probe reads
    work = Path(tempfile.mkdtemp(prefix="transferkit-int8-text-"))
    try:
        plan_text_engine(spec, "onnx", work / "fp32").open()  # export once
        for name in args.datasets:
            started = time.perf_counter()
            results["sets"][name] = bench_set(name, work, spec, work / "fp32" / "engines", args.rounds, args.threads)
            results["sets"][name]["bench_s"] = round(time.perf_counter() - started, 1)
        results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results)
    save_results(results, "int8_text.json")


if __name__ == "__main__":
    sys.exit(main())
