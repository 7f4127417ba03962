"""The criteria ``adapt --select`` chooses among adapted models by, without target labels: declared here without
numpy, so ``--help`` and the option's check read the names from this table; each score (selection.py) is
imported when a model is scored. A new criterion is a score function plus one line below."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transferkit.registry import load_ref


@dataclass(frozen=True)
class Criterion:
    name: str
    ref: str  # "module:function" scoring one model's Evidence
    higher_is_better: bool

    def score(self, evidence: Any) -> float:
        """The score of one model's evidence (selection.Evidence; not imported: selection imports this)."""
        return load_ref(self.ref)(evidence)

    def best(self, scores: list[float]) -> int:
        """The index of the best of ``scores``."""
        import numpy as np

        return int(np.argmax(scores) if self.higher_is_better else np.argmin(scores))


SCORES = "transferkit.adapt.selection"
CRITERIA: dict[str, Criterion] = {c.name: c for c in (
    Criterion("source-val", f"{SCORES}:source_accuracy", True),
    Criterion("entropy", f"{SCORES}:target_entropy", False),
    Criterion("info-max", f"{SCORES}:information_maximization", True),
    Criterion("dev", f"{SCORES}:deep_embedded_validation", False),
)}
