"""Fine-tuning benchmark (not run by the tests): hymenoptera, efficientnet_lite0.

Rows, measured in the same run on the same data and batch size:
  * transferkit ``gradual`` (1 head-only epoch from the linear-probe solution, then 1 or N epochs of everything),
    the CLI as its own process;
  * fastai ``fine_tune(N, freeze_epochs=1)`` on the same backbone, its own process in bench/.venv-peers;
  * a plain eager PyTorch loop (NCHW, no accelerate, no channels_last) for the per-epoch time of the same model.

    python bench/finetune.py [--data /work/shared/data/hymenoptera_data] [--epochs 2] [--subset 8 --image-size 64]

``--subset N`` keeps N images per class and split: a smoke run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from run import BIN, DATA, timed


def subset_folder(data: Path, per_class: int, target: Path) -> Path:
    for split in ("train", "val"):
        for class_dir in sorted((data / split).iterdir()):
            if class_dir.is_dir():
                out = target / split / class_dir.name
                out.mkdir(parents=True, exist_ok=True)
                for f in sorted(class_dir.iterdir())[:per_class]:
                    shutil.copy(f, out / f.name)
    return target


def run_transferkit(data: Path, args: argparse.Namespace, out: Path, epochs: int) -> dict:
    """The CLI as a user runs it, as its own process: start-up, the probe and saving all count."""
    import json

    command = [str(BIN / "transferkit"), "train", str(data), "--strategy", "gradual",
               "--epochs", str(epochs), "--batch-size", str(args.batch_size), "--image-size", str(args.image_size),
               "--out", str(out), "--overwrite", "--json"] + (["--workers", str(args.workers)] if args.workers else [])
    total, out, _ = timed(command)
    metrics = json.loads(out)
    unfrozen = [r["train_seconds"] for r in metrics["history"] if r["phase"] == "all"]
    return {"name": f"transferkit gradual (1 head + {epochs - 1} all)", "val_accuracy": metrics["val"]["accuracy"],
            "total_s": total, "epoch_s": float(np.mean(unfrozen)) if unfrozen else None}


def make_loaders(data: Path, args: argparse.Namespace):
    import torch

    from transferkit.modalities.image.backbones import resolve_backbone
    from transferkit.modalities.image.folders import load_image_folder
    from transferkit.modalities.image.training import TrainImages, decode_split, train_transform
    from transferkit.train.data import EpochSampler, loader_workers as default_workers

    spec = resolve_backbone("efficientnet_lite0", input_size=args.image_size)
    folder = load_image_folder(data)
    dataset = TrainImages(folder.train, train_transform(spec.preprocessing, "light"), spec.preprocessing.resize_size)
    workers = args.workers if args.workers is not None else default_workers()
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=workers,
                                         sampler=EpochSampler(folder.train.labels, 0))
    val_images, val_labels, _ = decode_split(folder.val, spec.preprocessing, args.batch_size, workers)
    return spec, folder, loader, val_images, val_labels


def run_eager(data: Path, args: argparse.Namespace) -> dict:
    """The same model and data through a textbook loop: NCHW float, AdamW, all parameters, no accelerate."""
    import torch

    from transferkit.modalities.image.model import ImageModel

    spec, folder, loader, val_images, val_labels = make_loaders(data, args)
    backbone = spec.build()
    model = ImageModel(backbone, spec.preprocessing, backbone.num_features, len(folder.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr or 3e-4)
    times = []
    start = time.perf_counter()
    for _ in range(args.epochs):
        t = time.perf_counter()
        model.train()
        for images, labels in loader:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - t)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(val_images[i:i + 64])) for i in range(0, len(val_images), 64)])
    accuracy = float((logits.argmax(1).numpy() == val_labels).mean())
    return {"name": "eager PyTorch (NCHW, all params)", "val_accuracy": accuracy,
            "total_s": time.perf_counter() - start, "epoch_s": float(np.mean(times))}


def run_fastai(data: Path, args: argparse.Namespace) -> dict | None:
    """fastai in its own environment (`make bench` builds bench/.venv-peers), as its own process."""
    import json

    if not args.fastai_python or not Path(args.fastai_python).exists():
        print("fastai environment not found (run `make bench`): skipping the fastai row", file=sys.stderr)
        return None
    total, out, _ = timed([args.fastai_python, str(Path(__file__).with_name("peer_fastai.py")), str(data),
                           str(args.epochs)])
    row = json.loads(out.strip().splitlines()[-1])
    return {"name": f"fastai fine_tune({args.epochs}, freeze_epochs=1)", "val_accuracy": row["val_accuracy"],
            "total_s": total, "epoch_s": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "hymenoptera_data")
    parser.add_argument("--epochs", type=int, default=2, help="epochs after the head-only epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=None, help="decoding workers (default: transferkit's rule, "
                                                                  "used by the eager loop too)")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--subset", type=int, default=0, help="images per class and split (smoke run)")
    parser.add_argument("--fastai-python", default=str(Path(__file__).with_name(".venv-peers") / "bin" / "python"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = subset_folder(args.data, args.subset, Path(tmp) / "data") if args.subset else args.data
        rows = [run_transferkit(data, args, Path(tmp) / "run", epochs) for epochs in (2, 1 + args.epochs)]
        fastai_row = run_fastai(data, args)
        if fastai_row:
            rows.append(fastai_row)
        rows.append(run_eager(data, args))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fine-tuning efficientnet_lite0 on {args.data.name}"
                        f"{f' (subset {args.subset}/class)' if args.subset else ''}, batch {args.batch_size}, "
                        f"{args.image_size}px")
    for column in ("method", "val accuracy", "total s", "train s / unfrozen epoch"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for r in rows:
        table.add_row(r["name"], f"{r['val_accuracy']:.4f}", f"{r['total_s']:.1f}",
                      "-" if r["epoch_s"] is None else f"{r['epoch_s']:.2f}")
    Console().print(table)
    ours = [r for r in rows if r["name"].startswith("transferkit")]
    eager = rows[-1]["epoch_s"]
    best_epoch = min(r["epoch_s"] for r in ours if r["epoch_s"])
    print(f"per-epoch training time (no validation): transferkit {best_epoch:.2f} s vs eager NCHW {eager:.2f} s "
          f"= {best_epoch / eager:.2f} (target <= 0.5)")
    if fastai_row:
        fast = min(ours, key=lambda r: r["total_s"])
        print(f"gradual {fast['name']}: val {fast['val_accuracy']:.4f} in {fast['total_s']:.1f} s = "
              f"{fast['total_s'] / fastai_row['total_s']:.2f} of fastai's {fastai_row['total_s']:.1f} s "
              f"(target: val >= 0.95 in <= 0.5)")


if __name__ == "__main__":
    main()
