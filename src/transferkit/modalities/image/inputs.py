"""A loaded image run's model inputs, for export and serve: ``uint8`` NHWC batches (normalisation is inside the
model), decoded and cropped as the run's preprocessing says."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from transferkit.features.graphs import export_graph
from transferkit.modalities.base import MODEL_OUTPUT, Batches
from transferkit.modalities.image.features import FeatureSource

if TYPE_CHECKING:
    import torch
    from torch import nn


class ImageInputs:
    names = ("images",)

    def __init__(self, clf: Any) -> None:
        self.clf, self.preprocessing = clf, clf.spec_.preprocessing

    def contract(self, preprocessing: dict[str, Any]) -> dict[str, Any]:
        pre, size = self.preprocessing, self.preprocessing.input_size
        return {**preprocessing, "inputs": [{"name": "images", "dtype": "uint8", "shape": ["batch", size, size, 3],
                                             "layout": "NHWC, RGB"}],
                "prepare": f"decode as RGB (EXIF orientation applied), resize the short side to {pre.resize_size} "
                           f"px ({pre.interpolation}), centre-crop {size}x{size}; the mean/std normalisation is "
                           "inside the model"}

    def example(self) -> tuple["torch.Tensor", ...]:
        import torch  # export only: serving and reading a run need no torch

        size = self.preprocessing.input_size
        noise = torch.Generator().manual_seed(0)
        return (torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8, generator=noise),)

    def export_onnx(self, model: "nn.Module", path: Path) -> None:
        export_graph(model, self.example(), path, self.names, MODEL_OUTPUT)  # as the feature engine is exported

    def batches(self, items: Any, batch_size: int) -> Batches:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            yield np.arange(start, start + len(chunk)), (np.ascontiguousarray(np.stack(list(chunk))),)

    def engine(self) -> Callable[..., np.ndarray]:
        self.clf.seed_run_engine()  # a fine-tuned run's own engine.onnx: opening it never pays a hidden export
        spec, config = self.clf.spec_, self.clf.config
        source = FeatureSource(spec.fingerprint, self.preprocessing, self.clf.feature_net, spec.name)
        return source.open(config.engine, config.cache_dir)

    def add_files(self, folder: Path) -> None:
        return None

    def requests(self, service: Any, decoding: Any) -> Any:
        from transferkit.modalities.image.requests import ImageRequests  # serve only: FastAPI

        return ImageRequests(service, decoding)
