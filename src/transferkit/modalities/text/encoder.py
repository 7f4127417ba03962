"""The ONNX (fp32, int8) / torch engines of a pooled text encoder (see pooling.py): token ids in, features out.

They are planned as an image network's are (features/engines.py): :class:`TextEngineRequest` says where a text
encoder's engines differ (its graph's inputs and export, its int8 recipe), and the shared plans do the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from transferkit.features.engines import (Engine, EnginePlan, EngineRequest, OnnxEngine, TorchEngine,
                                          cached_onnx_engine, plan_request)
from transferkit.features.graphs import export_graph
from transferkit.features.quantize import TEXT_DYNAMIC, Calibration, Recipe

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


class TextOnnxInt8Engine(TextOnnxEngine):
    """An int8 graph (quantize.py's text recipe) in the same session; idle threads spin as fp32's do: no
    decoding threads here to take their cores."""

    name = "onnx-int8"


class TextTorchEngine(TorchEngine):
    """The image engine's network on its device, fed token ids; fp32 (no autocast), as the ONNX engine."""

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            ids = torch.from_numpy(input_ids).to(self.device)
            mask = torch.from_numpy(attention_mask).to(self.device)
            return self.net(ids, mask).float().cpu().numpy()


TEXT_ENGINE_FILE = "text-encoder.onnx"  # a text encoder's engine, in its fingerprint's engine folder
TEXT_INPUTS = ("input_ids", "attention_mask")  # a text encoder's inputs, as its engines and exports name them


def export_text_onnx(net: "nn.Module", path: Path) -> None:
    """Export encoder + pooling with dynamic batch and sequence axes, atomically."""
    import torch

    example = (torch.ones((2, 8), dtype=torch.long), torch.ones((2, 8), dtype=torch.long))
    export_graph(net, example, path, TEXT_INPUTS, "embeddings", sequence=True)


@dataclass
class TextEngineRequest(EngineRequest):
    """A text encoder's engines: ``text-encoder.onnx`` fed token ids, int8 by the text recipe."""

    pooling: str = "mean"
    items: ClassVar[str] = "texts"
    recipe: ClassVar[Recipe] = TEXT_DYNAMIC
    int8_engine: ClassVar[Callable[[Path], OnnxEngine]] = TextOnnxInt8Engine

    def engine_file(self) -> str:
        return TEXT_ENGINE_FILE

    def meta(self) -> dict[str, Any]:
        return {"backbone": self.label, "input_size": None, "kind": "text", "pooling": self.pooling}

    def fp32(self) -> Engine:
        return cached_onnx_engine(self.fp32_path(), self.build_net, export_text_onnx, self.meta(), self.label,
                                  TextOnnxEngine, TextTorchEngine)

    def torch(self) -> Engine:
        return TextTorchEngine(self.build_net())


def plan_text_engine(spec: TextBackboneSpec, engine: str = "auto", cache_dir: str | Path | None = None,
                     build_net: Callable[[], "nn.Module"] | None = None,
                     calibration: Callable[[], Calibration] | None = None) -> EnginePlan:
    """The engine named ``engine`` (see config.ENGINES) for ``spec``; an int8 engine not yet built
    is checked on ``calibration`` (training texts only), and without it fp32 serves."""
    return plan_request(TextEngineRequest(spec.fingerprint, 0, build_net or spec.build, cache_dir, spec.name,
                                          calibration, spec.pooling), engine)


def open_text_engine(spec: TextBackboneSpec, engine: str = "auto", cache_dir: str | Path | None = None,
                     build_net: Callable[[], "nn.Module"] | None = None) -> Engine:
    """The engine itself (see :func:`plan_text_engine`): a saved int8 run predicts with its cached int8 engine."""
    return plan_text_engine(spec, engine, cache_dir, build_net).open()
