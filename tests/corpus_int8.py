"""Bad-input cases of issue 23 (area: int8), gathered into tests/test_bad_inputs.py's corpus."""

from __future__ import annotations

from corpus_cases import Case, Workspace


def few_training_images(ws: Workspace) -> None:
    ws.images("data", {"train": 1, "val": 1})  # 2 training images, 2 classes


def few_training_images_unsplit(ws: Workspace) -> None:
    ws.images("data", {"": 3})  # 6 images, some held out for validation: fewer still to calibrate on


CASES: list[Case] = [
    # A sample of 1-2 images built (and cached) the int8 engine every later run of the backbone reuses.
    Case("int8-calibrated-on-two-images", "silent", few_training_images,
         ("train", "data", "--engine", "onnx-int8", "--out", "run"), 2,
         says=(r"--engine onnx-int8 needs at least 16 training images", r"\(got 2\)", r"--engine onnx\b"),
         absent=("run",)),
    Case("int8-calibrated-on-a-split-off-handful", "silent", few_training_images_unsplit,
         ("train", "data", "--engine", "onnx-int8", "--out", "run"), 2,
         says=(r"needs at least 16 training images",), absent=("run",)),
]
