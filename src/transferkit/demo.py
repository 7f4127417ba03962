"""``transferkit demo``: the main job on natural images that ship inside the package, offline.

A CIFAR-10 sample (20 labelled images per class, 30 test images per class; see demo_data/cifar10/SOURCE.md)
goes through what the toolkit is for, each row on the same split and timed: logistic regression on raw pixels
(no pretrained knowledge), the same network trained from scratch, the linear probe on ImageNet features, a
gradual fine-tune, and LoRA. The runs and an HTML report comparing them are written to the work folder.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.progress import log

DEMO_DATA = Path(__file__).parent / "demo_data" / "cifar10"
IMAGE_SIZE = 96  # CIFAR's 32 px upscaled; the whole demo stays under 3 minutes on 2 cores
RAW = "raw-pixel logistic regression"
# (label, run folder, estimator parameters): every trained row gets the same epochs and augmentation
RUNS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("EfficientNet-Lite0 from scratch (4 epochs)", "scratch", {"strategy": "scratch", "epochs": 4, "lr": 3e-3}),
    ("linear probe on ImageNet features", "probe", {"strategy": "linear-probe"}),
    ("gradual fine-tune (4 epochs)", "gradual", {"strategy": "gradual", "epochs": 4}),
    ("LoRA r=8, gradual (4 epochs)", "lora", {"strategy": "gradual", "epochs": 4, "adapter": "lora:r=8",
                                             "lr": 1e-3}),
)


def raw_pixel_baseline(seed: int) -> dict[str, float]:
    """Logistic regression on the raw 32x32x3 pixels, its L2 chosen on the same validation split."""
    from PIL import Image

    from transferkit.heads.probe import fit_probe
    from transferkit.modalities.image.folders import load_image_folder

    start = time.perf_counter()
    dataset = load_image_folder(DEMO_DATA, val_fraction=0.2, seed=seed)

    def pixels(paths: list[str]) -> np.ndarray:
        return np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32).ravel() / 255 for p in paths])

    head = fit_probe(pixels(dataset.train.items), np.array(dataset.train.labels), len(dataset.classes),
                     pixels(dataset.val.items), np.array(dataset.val.labels))
    predicted = head.predict_proba(pixels(dataset.test.items)).argmax(1)
    return {"accuracy": float((predicted == np.array(dataset.test.labels)).mean()),
            "seconds": time.perf_counter() - start}


def run_demo(seed: int = 0, workdir: Path | None = None) -> dict[str, dict[str, float]]:
    from rich.console import Console
    from rich.table import Table

    from transferkit.estimators.image import ImageClassifier

    console = Console(highlight=False)
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="transferkit-demo-"))
    log(f"demo: CIFAR-10 sample in the package ({DEMO_DATA}), runs and report in {root}")
    results = {RAW: raw_pixel_baseline(seed)}
    runs = []
    for label, folder, params in RUNS:
        start = time.perf_counter()
        clf = ImageClassifier("efficientnet_lite0", seed=seed, image_size=IMAGE_SIZE, val_fraction=0.2, **params)
        clf.verbose = False
        clf.fit(DEMO_DATA, out=root / folder if params["strategy"] != "linear-probe" else None)
        results[label] = {"accuracy": clf.metrics_["test"]["accuracy"], "seconds": time.perf_counter() - start}
        runs.append(clf.save(root / folder, overwrite=True))
    table = Table(title="CIFAR-10 sample: 20 labelled images per class (16 train + 4 val), test n=300")
    for column, justify in (("model", "left"), ("test accuracy", "right"), ("seconds", "right")):
        table.add_column(column, justify=justify)
    for label, row in results.items():
        table.add_row(label, f"{row['accuracy']:.3f}", f"{row['seconds']:.1f}")
    console.print(table)
    console.print(verdict(results))
    report = write_demo_report(runs, root / "report.html")
    if report is not None:
        console.print(f"report: {report}")
    return results


def write_demo_report(runs: list[Path], out: Path) -> Path | None:
    try:
        from transferkit.report.html import write_report  # lazy: matplotlib, an optional extra
    except ImportError:
        log("notice: no HTML report (pip install 'transferkit[report]' for one)")
        return None
    return write_report(runs, out)


def verdict(results: dict[str, dict[str, float]]) -> str:
    accuracy = {label: row["accuracy"] for label, row in results.items()}
    best = max(accuracy, key=accuracy.get)
    scratch, probe = accuracy[RUNS[0][0]], accuracy[RUNS[1][0]]
    return (f"Best: {best} ({accuracy[best]:.3f}). With 16 labelled images per class, ImageNet features are worth "
            f"{probe - accuracy[RAW]:+.3f} over raw pixels and {probe - scratch:+.3f} over the same network trained "
            "from scratch.")
