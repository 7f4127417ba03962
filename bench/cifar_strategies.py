"""CIFAR-10 subset: gradual vs linear-probe vs scratch (not run by the tests), efficientnet_lite0, CPU.

    .venv/bin/python bench/cifar_strategies.py [--per-class 100] [--test-per-class 100] [--epochs 3]

Takes the first N training and M test images per class from ../shared/data/cifar10 (links, no copies), and
runs ``transferkit train`` for each strategy as its own process with an empty feature cache: validation is
20% of the subset's train (stratified), test is the held-out test subset. gradual and scratch get the same
epoch budget (gradual: 1 head-only epoch, then the rest with everything training), so the table shows what
the pretrained weights are worth at equal cost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from run import BIN, DATA, timed


def subset(data: Path, target: Path, per_split: dict[str, tuple[str, int]]) -> Path:
    for split, (source, count) in per_split.items():
        for class_dir in sorted((data / source).iterdir()):
            if class_dir.is_dir():
                out = target / split / class_dir.name
                out.mkdir(parents=True, exist_ok=True)
                for f in sorted(class_dir.iterdir())[:count]:
                    os.symlink(f.resolve(), out / f.name)
    return target


def run(data: Path, strategy: str, epochs: int, scratch: Path, extra: list[str]) -> dict:
    trains = [] if strategy == "linear-probe" else ["--epochs", str(epochs)]  # a probe trains no epochs
    command = [str(BIN / "transferkit"), "train", str(data), "--strategy", strategy, *trains,
               "--out", str(scratch / strategy), "--overwrite", "--json", *extra]
    wall, out, _ = timed(command, {"TRANSFERKIT_CACHE": str(scratch / f"cache-{strategy}")})
    metrics = json.loads(out.strip().splitlines()[-1])
    return {"strategy": strategy, "test": metrics["test"]["accuracy"], "val": metrics["val"]["accuracy"],
            "wall_s": wall, "trainable": metrics.get("trainable_parameters", 0),
            "epoch_s": [r["train_seconds"] for r in metrics.get("history", [])]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(DATA / "cifar10"))
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=None, help="default: the backbone's (224)")
    args = parser.parse_args()
    extra = ["--image-size", str(args.image_size)] if args.image_size else []
    rows = []
    with tempfile.TemporaryDirectory(prefix="tk-bench-cifar-") as tmp:
        scratch = Path(tmp)
        data = subset(Path(args.data), scratch / "data", {"train": ("train", args.per_class),
                                                           "test": ("test", args.test_per_class)})
        for strategy in ("linear-probe", "gradual", "scratch"):
            rows.append(run(data, strategy, args.epochs, scratch, extra))
            print(f"{strategy}: done in {rows[-1]['wall_s']:.1f} s", file=sys.stderr)
    print(f"\nCIFAR-10 subset: {args.per_class}/class train (20% of it val), {args.test_per_class}/class test, "
          f"efficientnet_lite0 @ {args.image_size or 224} px, CPU ({os.cpu_count()} cores)")
    print(f"{'strategy':<14} {'epochs':>6} {'test acc':>8} {'val acc':>8} {'wall s':>7} {'trainable':>11}  s/epoch")
    for r in rows:
        epochs = "-" if r["strategy"] == "linear-probe" else str(args.epochs)
        print(f"{r['strategy']:<14} {epochs:>6} {r['test']:>8.4f} {r['val']:>8.4f} {r['wall_s']:>7.1f} "
              f"{r['trainable']:>11,}  {' '.join(f'{s:.1f}' for s in r['epoch_s']) or '-'}")


if __name__ == "__main__":
    main()
