"""The ONNX / torch engines of a pooled text encoder (see pooling.py): token ids in, features out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from transferkit.errors import TransferkitError
from transferkit.features.engines import OnnxEngine, TorchEngine, cached_onnx_engine, engine_dir, export_atomically, gpu_present

if TYPE_CHECKING:
    from torch import nn

    from transferkit.modalities.text.backbone import TextBackboneSpec


# ----------------------------------------------------------------------------------------------------------
# Engines: ONNX Runtime on CPU, torch on GPU (or when forced)
# ----------------------------------------------------------------------------------------------------------
class TextOnnxEngine(OnnxEngine):
    """The image engine's session, fed token ids and an attention mask."""

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]


class TextTorchEngine(TorchEngine):
    """The image engine's network on its device, fed token ids; fp32 (no autocast), as the ONNX engine."""

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            ids = torch.from_numpy(input_ids).to(self.device)
            mask = torch.from_numpy(attention_mask).to(self.device)
            return self.net(ids, mask).float().cpu().numpy()


TEXT_ENGINE_FILE = "text-encoder.onnx"  # a text encoder's engine, in its fingerprint's engine folder


def export_text_onnx(net: "nn.Module", path: Path) -> None:
    """Export encoder + pooling with dynamic batch and sequence axes, atomically."""
    import torch

    example = (torch.ones((2, 8), dtype=torch.long), torch.ones((2, 8), dtype=torch.long))
    export_atomically(path, lambda tmp: torch.onnx.export(
        net.eval(), example, tmp, dynamo=False, opset_version=17,
        input_names=["input_ids", "attention_mask"], output_names=["embeddings"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                      "embeddings": {0: "batch"}},
    ))


def open_text_engine(spec: TextBackboneSpec, engine: str = "auto", cache_dir: str | Path | None = None,
                     build_net: Callable[[], "nn.Module"] | None = None) -> TextOnnxEngine | TextTorchEngine:
    if engine not in ("auto", "onnx", "torch"):
        raise TransferkitError(f"engine must be auto, onnx or torch, got {engine!r}")
    build_net = build_net or spec.build
    if engine == "auto":
        engine = "torch" if gpu_present() else "onnx"
    if engine == "torch":
        return TextTorchEngine(build_net())
    path = engine_dir(spec.fingerprint, cache_dir) / TEXT_ENGINE_FILE
    meta = {"backbone": spec.name, "input_size": None, "kind": "text", "pooling": spec.pooling}
    return cached_onnx_engine(path, build_net, export_text_onnx, meta, spec.name, TextOnnxEngine, TextTorchEngine)


