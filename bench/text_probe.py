"""Text linear probe: transferkit (cold and warm feature cache) vs sentence-transformers + scikit-learn.

    .venv/bin/python bench/text_probe.py [--datasets rt_polarity trec] [--data-root /work/shared/data]
        [--backbones all-MiniLM-L6-v2 all-mpnet-base-v2]

Both sides use the same packaged encoder (all-MiniLM-L6-v2 by default; all-mpnet-base-v2 with the ``mpnet``
extra: its one-off unpacking into the cache counts in the export row) on CPU and are measured in the same run.
The peer is ``SentenceTransformer(path).encode`` on train and test + ``LogisticRegression`` (scikit-learn
defaults, max_iter 1000). transferkit is ``TextClassifier().fit(train.csv)`` + ``score(test.csv)``: cold = no
embeddings cached, with the encoder's one-off ONNX export done beforehand (as for images in bench/run.py;
its time is a row of its own, and "cold + export" adds it); warm = the same again with the cache filled.
Every row runs in its own process, timed from outside: wall seconds include interpreter start-up, imports
and loading the model. Not run by the tests.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from run import DATA, timed as run_timed

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TARGETS = {"rt_polarity": 0.77, "trec": 0.914}


def read(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def peer(model_path: str, train: Path, test: Path) -> dict:
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    model = SentenceTransformer(model_path, device="cpu")
    train_x, train_y = read(train)
    test_x, test_y = read(test)
    clf = LogisticRegression(max_iter=1000).fit(model.encode(train_x, batch_size=32), train_y)
    accuracy = float((clf.predict(model.encode(test_x, batch_size=32)) == __import__("numpy").array(test_y)).mean())
    return {"accuracy": accuracy}


def ours(train: Path, test: Path, cache: str, backbone: str) -> dict:
    from transferkit import TextClassifier

    clf = TextClassifier(backbone=backbone, cache_dir=cache)
    clf.verbose = False
    clf.fit(train)
    return {"accuracy": clf.score(test), "l2": clf.head_.l2, "val": clf.metrics_["val"]["accuracy"],
            "layers": clf.spec_.layers}


def spec(cache: str, backbone: str):  # noqa: ANN201 - a TextBackboneSpec
    from transferkit.config import RunConfig
    from transferkit.modalities import TEXT
    from transferkit.strategies import parse_strategy

    config = RunConfig(backbone=backbone, cache_dir=cache)
    return TEXT.resolve(config, parse_strategy(config.strategy))


def export(cache: str, backbone: str) -> dict:
    """The once-per-encoder ONNX export into ``cache`` (of the encoder a TextClassifier of ``backbone`` reads)."""
    from transferkit.modalities.text.encoder import open_text_engine

    open_text_engine(spec(cache, backbone), "onnx", cache)
    return {}


def timed(role: str, train: Path, test: Path, cache: str, backbone: str) -> dict:
    """Run one contender in a fresh interpreter (start-up and imports count for everyone), timed from outside."""
    seconds, out, _ = run_timed([sys.executable, __file__, "--child", role, str(train), str(test), cache, backbone])
    return {**json.loads(out.strip().splitlines()[-1]), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["rt_polarity", "trec"])
    parser.add_argument("--data-root", default=str(DATA))
    parser.add_argument("--backbones", nargs="+", default=["all-MiniLM-L6-v2"])
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--child", nargs=5, metavar=("ROLE", "TRAIN", "TEST", "CACHE", "BACKBONE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        role, train, test, cache, backbone = args.child
        if role == "peer":
            print(json.dumps(peer(spec(cache, backbone).location, Path(train), Path(test))))
        else:
            print(json.dumps(ours(Path(train), Path(test), cache, backbone) if role == "ours" else
                             export(cache, backbone)))
        return
    rows = [row for name in args.datasets for backbone in args.backbones
            for row in measure(Path(args.data_root) / name, backbone, args.skip_peer)]
    print(f"\n{'dataset':<12} {'backbone':<18} {'method':<44} {'test acc':>8} {'wall s':>8} {'ratio':>6} target")
    for name, backbone, method, acc, seconds, ratio in rows:
        target = ""
        if method.startswith("transferkit") and name in TARGETS:
            target = f"acc>={TARGETS[name]}" + (" ok" if acc >= TARGETS[name] else " MISSED")
        print(f"{name:<12} {backbone:<18} {method:<44} {acc:>8.4f} {seconds:>8.1f} {ratio:>6.2f} {target}")
    print(f"(CPU: {os.cpu_count()} cores, possibly shared with other processes; every row is its own process)")


def measure(data: Path, backbone: str, skip_peer: bool) -> list[tuple]:
    """One data set with one encoder: the peer, then transferkit cold, cold + export and warm (rows to print)."""
    name, train, test = data.name, data / "train.csv", data / "test.csv"
    cache = tempfile.mkdtemp(prefix=f"tk-bench-{name}-")
    try:
        export_s = timed("export", train, test, cache, backbone)["seconds"]
        cold = timed("ours", train, test, cache, backbone)
        warm = timed("ours", train, test, cache, backbone)
        peer_acc, peer_s = ((float("nan"), float("nan")) if skip_peer else
                            (lambda r: (r["accuracy"], r["seconds"]))(timed("peer", train, test, cache, backbone)))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"{name} {backbone}: {cold['layers']} encoder layers, chosen l2 {cold['l2']:g}, val accuracy "
          f"{cold['val']:.4f}", file=sys.stderr)
    rows = [("sentence-transformers + LogisticRegression", peer_acc, peer_s),
            ("transferkit probe, cold cache", cold["accuracy"], cold["seconds"]),
            ("transferkit probe, cold cache + ONNX export", cold["accuracy"], cold["seconds"] + export_s),
            ("transferkit probe, warm cache", warm["accuracy"], warm["seconds"])]
    return [(name, backbone, method, acc, seconds, seconds / peer_s) for method, acc, seconds in rows]


if __name__ == "__main__":
    main()
