"""fastai peer, run in bench/.venv-peers (see `make bench`): its own data pipeline and fine_tune recipe.

    python bench/peer_fastai.py DATA [EPOCHS] [VALID_FOLDER]
ImageDataLoaders.from_folder (Resize(224) item transform, bs 32), the packaged EfficientNet-Lite0 body with a
new linear head (fastai cannot download the timm weights offline), fine_tune(EPOCHS, freeze_epochs=1).
Prints one JSON line: {"val_accuracy": ..., "seconds": ...} (seconds: the whole process).
"""

from __future__ import annotations

import json
import sys
import time

START = time.perf_counter()

import torch  # noqa: E402
from fastai.vision.all import ImageDataLoaders, Learner, Resize, accuracy  # noqa: E402

from transferkit.modalities.image.backbones import resolve_backbone  # noqa: E402
from transferkit.modalities.image.model import ImageModel  # noqa: E402


def main(root: str, epochs: int, valid: str = "val") -> None:
    torch.manual_seed(0)
    dls = ImageDataLoaders.from_folder(root, train="train", valid=valid, item_tfms=Resize(224), bs=32, num_workers=2)
    spec = resolve_backbone("efficientnet_lite0")
    backbone = spec.build()
    # ImageModel normalises float [0, 1] NCHW input itself, the way fastai hands batches over without Normalize.
    model = ImageModel(backbone, spec.preprocessing, backbone.num_features, dls.c)
    learn = Learner(dls, model, metrics=accuracy,
                    splitter=lambda m: [list(m.features.parameters()), list(m.head.parameters())])
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(epochs, freeze_epochs=1)
    # the last epoch's validation, which fine_tune has just run (its recorder keeps it with logging off): a
    # learn.validate() would score the same model on the same items again (10,000 CIFAR images at 224 px)
    val_accuracy = learn.recorder.values[-1][-1]
    print(json.dumps({"val_accuracy": float(val_accuracy), "seconds": time.perf_counter() - START}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2, sys.argv[3] if len(sys.argv) > 3 else "val")
