"""``AutoClassifier``: ``transferkit auto`` as a scikit-learn style estimator. ``fit(DATA)`` runs the budgeted
search on a data folder or table (auto reads its items from the data itself) and keeps the winner, whose
``predict`` / ``predict_proba`` / ``score`` it answers with; ``get_params`` / ``set_params`` / ``clone`` work on
its own parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from transferkit.errors import TransferkitError
from transferkit.estimators.core import TransferClassifier


class AutoClassifier:
    _estimator_type = "classifier"  # scikit-learn < 1.6 reads this instead of tags

    def __init__(self, budget: str | float = "15m", metric: str = "accuracy", backbones: Sequence[str] = (),
                 seed: int = 0, out: str | None = None, target: str | None = None) -> None:
        self.budget, self.metric, self.backbones, self.seed, self.out = budget, metric, backbones, seed, out
        self.target = target  # unlabelled target images: auto adapts to them (chosen by info-max)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"budget": self.budget, "metric": self.metric, "backbones": self.backbones, "seed": self.seed,
                "out": self.out, "target": self.target}

    def set_params(self, **params: Any) -> "AutoClassifier":
        for name, value in params.items():
            if name not in self.get_params():
                raise TransferkitError(f"AutoClassifier has no parameter '{name}'; it has: "
                                       f"{', '.join(self.get_params())}")
            setattr(self, name, value)
        return self

    def fit(self, data: str | Path, y: Any = None) -> "AutoClassifier":
        if y is not None or not isinstance(data, (str, Path)):
            raise TransferkitError("AutoClassifier.fit takes a data folder or table (its labels come from it); "
                                   "for items with labels use ImageClassifier or TextClassifier")
        from transferkit.automl.run import auto

        self.classifier_: TransferClassifier = auto(data, self.out, self.budget, self.backbones, self.metric,
                                                    target=self.target, seed=self.seed)
        self.classes_ = self.classifier_.classes_
        self.decisions_ = self.classifier_.metrics_["auto"]
        return self

    def _fitted(self) -> TransferClassifier:
        if not hasattr(self, "classifier_"):
            raise TransferkitError("this AutoClassifier is not fitted yet; call fit(DATA)")
        return self.classifier_

    def predict(self, inputs: Any) -> list[Any]:
        return self._fitted().predict(inputs)

    def predict_proba(self, inputs: Any) -> Any:
        return self._fitted().predict_proba(inputs)

    def score(self, data: Any, labels: Sequence[Any] | None = None) -> float:
        return self._fitted().score(data, labels)
