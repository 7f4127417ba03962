"""A loaded vector run's model inputs (export, serve): ``vectors`` float32 [batch, dim]; ``POST /predict`` takes
``{"vectors": [[...], ...]}``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from transferkit.features.graphs import export_graph
from transferkit.modalities.base import MODEL_OUTPUT, Batches
from transferkit.modalities.http import ERRORS, PredictResponse, TopK, too_many


class VectorInputs:
    names = ("vectors",)

    def __init__(self, clf: Any) -> None:
        self.clf, self.dim = clf, int(clf.spec_.dim)

    def contract(self, preprocessing: dict[str, Any]) -> dict[str, Any]:
        return {**preprocessing, "inputs": [{"name": "vectors", "dtype": "float32", "shape": ["batch", self.dim]}],
                "prepare": f"{self.dim} numbers per item"}

    def example(self) -> tuple[torch.Tensor, ...]:
        return (torch.randn(2, self.dim, generator=torch.Generator().manual_seed(0)),)

    def export_onnx(self, model: torch.nn.Module, path: Path) -> None:
        export_graph(model, self.example(), path, self.names, MODEL_OUTPUT)

    def batches(self, items: Any, batch_size: int) -> Batches:
        items = np.asarray(items, dtype=np.float32)
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            yield np.arange(start, start + len(chunk)), (chunk,)

    def engine(self) -> Callable[..., np.ndarray]:
        net = self.clf.feature_net()

        def run(vectors: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return net(torch.from_numpy(vectors)).numpy()
        return run

    def add_files(self, folder: Path) -> None:
        return None

    def requests(self, service: Any, decoding: Any) -> "VectorRequests":
        return VectorRequests(service, self.dim)


class VectorsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vectors: list[list[float]] = Field(min_length=1, description="Vectors to classify")


class VectorRequests:
    def __init__(self, service: Any, dim: int) -> None:
        self.service, self.dim = service, dim

    def register(self, app: FastAPI, batcher: Any) -> None:
        service = self.service

        @app.post("/predict", response_model=PredictResponse, responses=ERRORS, summary="Classify vectors")
        async def predict(body: VectorsRequest, top_k: TopK = 1) -> PredictResponse:
            if len(body.vectors) > service.limits.max_items:
                raise too_many("vectors", len(body.vectors), service.limits.max_items)
            wrong = next((i for i, v in enumerate(body.vectors) if len(v) != self.dim), None)
            if wrong is not None:
                raise HTTPException(422, f"vectors[{wrong}]: {len(body.vectors[wrong])} numbers, not {self.dim}")
            items = [np.asarray(v, dtype=np.float32) for v in body.vectors]
            names = [",".join(map(str, v)) for v in body.vectors]
            return service.response(names, await batcher.submit(items), top_k)
