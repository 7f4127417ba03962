"""Does ``transferkit audit`` find what was planted? (issue 25; not run by the tests)

    .venv/bin/python bench/audit.py [--sets hymenoptera cifar10 trec] [--seeds 0 1 2] [--noise 0.05] [--skip-labels]

For each set and seed, label noise: ``--noise`` of the training labels flipped to another class (seeded); the
audit (its own threshold, every split: the set's test split clean) flags items; precision and recall of the
flipped ones, and the linear probe's test accuracy (``transferkit train``'s probe: L2 on a fifth of train,
refitted) trained on clean labels, on noisy labels, and on noisy labels without the audit's exclusions.
hymenoptera: ``train/`` is audited and trained on, ``val/`` is the test split; cifar10: the shared 10k/10k;
trec: train.csv / test.csv.
Duplicates (cifar10): 100 training images copied into the test split after a random resize (0.5-2x), JPEG
recompression (quality 60-95) and a crop of up to 10%, and 100 others copied byte for byte: recall of each kind,
and the pairs found that were not planted (CIFAR's own near-duplicates among them: ciFAIR, Barz & Denzler 2020).
Speed: the audit's seconds with every feature cached (the second audit of a set), and its CPU seconds (every
thread; the wall time on a shared machine counts the neighbours' work too). --skip-labels: duplicates only.
Writes bench/results/audit.json (--out).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from run import DATA, save_results, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SETS = {"hymenoptera": (DATA / "hymenoptera_data" / "train", DATA / "hymenoptera_data" / "val"),
        "cifar10": (DATA / "cifar10" / "train", DATA / "cifar10" / "test"),
        "trec": (DATA / "trec" / "train.csv", DATA / "trec" / "test.csv")}


def cpu_flags() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f in flags) or \
        platform.machine()


def read(name: str) -> tuple[Any, Any, Any]:
    """(modality, AuditItems of train + test, RunConfig) as ``transferkit audit`` reads them."""
    from transferkit.audit.items import read_items
    from transferkit.config import RunConfig
    from transferkit.selection.candidates import modality_of

    train, test = SETS[name]
    modality = modality_of(train)
    config = RunConfig(data=str(train), test_data=str(test), backbone=modality.default_backbone)
    return modality, read_items(modality, str(train), config), config


def flipped(labels: np.ndarray, splits: np.ndarray, share: float, n_classes: int, seed: int) -> np.ndarray:
    """Indices of training items whose labels were flipped (in place) to another class."""
    rng = np.random.default_rng(seed)
    train = np.flatnonzero(splits == "train")
    chosen = rng.choice(train, size=round(share * len(train)), replace=False)
    labels[chosen] = (labels[chosen] + rng.integers(1, n_classes, size=len(chosen))) % n_classes
    return np.sort(chosen)


def probe_accuracy(features: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                   standardize: bool, n_classes: int, seed: int) -> float:
    from transferkit.heads.probe import fit_probe
    from transferkit.selection.crossval import stratified_folds

    x, y = features[train], labels[train]
    val = stratified_folds(y, 5, seed) == 0
    head = fit_probe(x[~val], y[~val], n_classes, x[val], y[val], refit=True, standardize=standardize)
    return float((head.predict_proba(features[test]).argmax(axis=1) == labels[test]).mean())


def label_noise(name: str, seed: int, share: float) -> dict[str, Any]:
    from transferkit.audit.run import audit_items
    from transferkit.selection.candidates import Backbone, featurize
    from transferkit.strategies import parse_strategy

    modality, items, config = read(name)
    clean = items.labels.copy()
    truly = flipped(items.labels, items.splits, share, len(items.classes), seed)
    result, cpu = cpu_timed(lambda: audit_items(modality, items, config))
    flagged = np.asarray(sorted({i["index"] for i in result["label_issues"] if i["split"] == "train"}), dtype=int)
    hits = len(np.intersect1d(flagged, truly))
    spec = modality.resolve(config, parse_strategy(config.strategy))
    features = featurize(modality, Backbone(config.backbone, None, config, spec), items.items, False)
    assert features.ok.all(), "bench sets read completely"
    x, standardize = features.features, not features.normalized
    train, test = np.flatnonzero(items.splits == "train"), np.flatnonzero(items.splits == "test")
    excluded = {e["item"] for e in result["exclusions"]}
    kept = np.asarray([i for i in train if items.where(i) not in excluded])
    n = len(items.classes)
    return {"set": name, "seed": seed, "flipped": len(truly), "flagged": len(flagged), "found": hits,
            "precision": hits / max(1, len(flagged)), "recall": hits / max(1, len(truly)),
            "excluded": len(train) - len(kept),
            "probe_clean": probe_accuracy(x, clean, train, test, standardize, n, seed),
            "probe_noisy": probe_accuracy(x, items.labels, train, test, standardize, n, seed),
            "probe_excluded": probe_accuracy(x, items.labels, kept, test, standardize, n, seed),
            "audit_seconds": result["seconds"], "audit_cpu_seconds": cpu}


def cpu_timed(work: Any) -> tuple[Any, float]:
    """(result, CPU seconds of this process, every thread): on a shared machine the wall time measures the
    neighbours too; on 2 idle cores the audit's wall time is at most its CPU time."""
    start = time.process_time()
    result = work()
    return result, round(time.process_time() - start, 1)


def altered(source: Path, target: Path, rng: random.Random) -> None:
    """A resized (0.5-2x), cropped (up to 10%) and recompressed (JPEG 60-95) copy of an image."""
    from PIL import Image

    with Image.open(source) as image:
        image = image.convert("RGB")
        w, h = image.size
        cut = rng.uniform(0, 0.1)
        left, top = rng.uniform(0, cut) * w, rng.uniform(0, cut) * h
        image = image.crop((left, top, left + (1 - cut) * w, top + (1 - cut) * h))
        scale = rng.uniform(0.5, 2.0)
        image = image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale))))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=rng.randint(60, 95))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(buffer.getvalue())


def duplicates(seed: int, work: Path) -> dict[str, Any]:
    from transferkit.audit.items import AuditItems
    from transferkit.audit.run import audit_items

    modality, items, config = read("cifar10")
    rng = random.Random(seed)
    train = [i for i in range(len(items)) if items.splits[i] == "train"]
    picked = rng.sample(train, 200)
    planted, extra, labels = {}, [], []
    for k, i in enumerate(picked):
        copy = work / f"seed{seed}" / f"copy_{k}{'.jpg' if k < 100 else Path(items.items[i]).suffix}"
        if k < 100:
            altered(Path(items.items[i]), copy, rng)
        else:
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(Path(items.items[i]).read_bytes())
        planted[str(copy)] = (items.items[i], "near" if k < 100 else "exact")
        extra.append(str(copy))
        labels.append(items.labels[i])
    every = AuditItems(items.classes, items.items + extra, np.concatenate([items.labels, labels]),
                       np.concatenate([items.splits, ["test"] * len(extra)]), None, items.files)
    result, cpu = cpu_timed(lambda: audit_items(modality, every, config))
    found = {tuple(sorted(p["items"])): p for p in result["duplicates"]}
    recall = {kind: sum(tuple(sorted((copy, original))) in found for copy, (original, k) in planted.items()
                        if k == kind) / 100 for kind in ("near", "exact")}
    planted_pairs = {tuple(sorted((copy, original))) for copy, (original, _) in planted.items()}
    others = [p for key, p in found.items() if key not in planted_pairs]
    return {"seed": seed, "near_recall": recall["near"], "exact_recall": recall["exact"],
            "other_pairs": len(others), "other_pairs_exact": sum(p["exact"] for p in others),
            "other_pairs_examples": [p["items"] + [p["similarity"]] for p in others[:20]],
            "planted_similarity": sorted(found[k]["similarity"] for k in planted_pairs if k in found)[:10],
            "audit_seconds": result["seconds"], "audit_cpu_seconds": cpu}


def recovered(row: dict[str, Any]) -> str:
    """The share of the accuracy the noise cost that training without the flagged items won back ("-" when the
    noise cost less than two test items' worth: the share would be noise)."""
    cost = row["probe_clean"] - row["probe_noisy"]
    return f"{(row['probe_excluded'] - row['probe_noisy']) / cost:.2f}" if cost > 0.002 else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--skip-duplicates", action="store_true")
    parser.add_argument("--skip-labels", action="store_true", help="only the planted duplicates")
    parser.add_argument("--out", default="audit.json")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores ({cpu_flags()}), load average {os.getloadavg()[0]:.2f}")
    results: dict[str, Any] = {"cpu": cpu_flags(), "cores": os.cpu_count(), "noise": args.noise,
                               "load_average_start": round(os.getloadavg()[0], 2), "label_noise": [],
                               "duplicates": []}
    for name in [] if args.skip_labels else args.sets:
        for seed in args.seeds:
            start = time.perf_counter()
            row = label_noise(name, seed, args.noise)
            row["wall_seconds"] = round(time.perf_counter() - start, 1)
            results["label_noise"].append(row)
            print(f"{name} seed {seed}: precision {row['precision']:.3f} recall {row['recall']:.3f}; probe clean "
                  f"{row['probe_clean']:.4f} noisy {row['probe_noisy']:.4f} excluded {row['probe_excluded']:.4f}")
    table("label noise (flipped training labels; probe test accuracy)",
          ["set", "seed", "flipped", "flagged", "precision", "recall", "probe clean", "noisy", "w/o flagged",
           "recovered", "audit s (warm)", "cpu s"],
          [[r["set"], r["seed"], r["flipped"], r["flagged"], f"{r['precision']:.3f}", f"{r['recall']:.3f}",
            f"{r['probe_clean']:.4f}", f"{r['probe_noisy']:.4f}", f"{r['probe_excluded']:.4f}",
            recovered(r),
            f"{r['audit_seconds']['total'] - r['audit_seconds']['features']:.1f}", r["audit_cpu_seconds"]]
           for r in results["label_noise"]])
    if not args.skip_duplicates:
        with tempfile.TemporaryDirectory(prefix="tk-audit-") as work:
            for seed in args.seeds:
                results["duplicates"].append(duplicates(seed, Path(work)))
        table("planted duplicates in CIFAR-10's 20,000 images (+200 copies in test)",
              ["seed", "near recall", "exact recall", "other pairs", "of them exact", "audit s", "cpu s"],
              [[d["seed"], f"{d['near_recall']:.2f}", f"{d['exact_recall']:.2f}", d["other_pairs"],
                d["other_pairs_exact"], f"{d['audit_seconds']['total']:.1f}", d["audit_cpu_seconds"]]
               for d in results["duplicates"]])
    results["load_average_end"] = round(os.getloadavg()[0], 2)  # other work on the machine inflates wall times
    save_results(results, args.out)


if __name__ == "__main__":
    main()
