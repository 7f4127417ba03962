"""The model behind the server: a run's feature engine (opened once) and its head, what GET /metadata says
about it (the response schema: modalities/http.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transferkit import __version__
from transferkit.estimators import load_classifier
from transferkit.modalities.http import Prediction, PredictResponse, Result
from transferkit.runs.rundir import read_run
from transferkit.serve.limits import Limits


class Service:
    """A run loaded for serving: ``predict(items)`` runs prepared items (decoded images, token ids) through
    the engine and the head; ``response`` turns rows of probabilities into the API's answer."""

    def __init__(self, run: str | Path, limits: Limits, cache_dir: str | Path | None = None) -> None:
        self.run, self.limits = Path(run), limits
        clf = load_classifier(run, cache_dir)  # the caller's cache, or the default: never the run's own stored one
        clf.verbose = False
        self.clf, self.inputs = clf, clf.modality.inputs(clf)
        self.files = read_run(run)
        self.engine = self.inputs.engine()  # opened once: ONNX Runtime's session lives as long as the server

    @property
    def classes(self) -> list[Any]:
        return list(self.clf.classes_)

    def predict(self, items: Sequence[Any]) -> np.ndarray:
        rows = np.zeros((len(items), len(self.classes)), np.float32)
        for positions, arrays in self.inputs.batches(items, max(1, len(items))):
            rows[positions] = self.clf.head_.predict_proba(self.engine(*arrays))
        return rows

    def response(self, names: Sequence[str], rows: np.ndarray, top_k: int) -> PredictResponse:
        k = min(top_k, len(self.classes))
        return PredictResponse(results=[
            Result(input=name, predictions=[Prediction(label=self.classes[i], probability=float(row[i]))
                                            for i in np.argsort(-row, kind="stable")[:k]])
            for name, row in zip(names, rows)])

    def metadata(self) -> dict[str, Any]:
        run, metrics = self.files, self.files.metrics
        summary = {split: {key: metrics[split].get(key) for key in ("n", "accuracy", "macro_f1", "log_loss", "ece")}
                   for split in ("val", "test") if isinstance(metrics.get(split), dict)}
        return {"run": str(self.run), "modality": self.clf.modality.name, "classes": self.classes,
                "backbone": run.model_meta.get("backbone", run.config.backbone), "strategy": run.config.strategy,
                "format": run.model_meta.get("format"), "metrics": summary, "preprocessing": run.preprocessing,
                "limits": self.limits.to_dict(), "transferkit": __version__}
