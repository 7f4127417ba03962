"""Several adapted models, one choice made without target labels: each method is fitted once per seed, every
model is scored by every selection criterion (selection.py), and the chosen criterion picks the method (its
mean over seeds) and then that method's seed. Target accuracy, when the target is labelled, is reported for
every candidate and never consulted."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from transferkit.errors import TransferkitError
from transferkit.methods.domain.estimator import DomainAdaptClassifier
from transferkit.methods.domain.selection import criterion
from transferkit.progress import log
from transferkit.train.registries import LOSS_TERMS, SOURCE_ONLY



def method_terms(method: str) -> list[str]:
    """The loss-term specs of one candidate method: none for ``source-only``; ``mmd+pseudo-label`` combines."""
    if method.strip() == SOURCE_ONLY:
        return []
    specs = [part.strip() for part in method.split("+")]
    for spec in specs:
        LOSS_TERMS.check(spec)
    return specs


@dataclass
class Candidate:
    method: str
    seed: int
    classifier: DomainAdaptClassifier
    seconds: float

    def score(self, name: str) -> float:
        return self.classifier.metrics_["selection"][name]

    @property
    def target_accuracy(self) -> float | None:
        return self.classifier.metrics_.get("target", {}).get("accuracy")

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "seed": self.seed, "scores": self.classifier.metrics_["selection"],
                "source_val_accuracy": self.classifier.metrics_.get("val", {}).get("accuracy"),
                "target_accuracy": self.target_accuracy, "seconds": round(self.seconds, 1)}


@dataclass
class Adaptation:
    candidates: list[Candidate]
    criterion: str
    chosen: Candidate

    def summary(self) -> list[dict[str, Any]]:
        """One row per method: its criterion and target accuracy, mean and standard deviation over seeds."""
        rows = []
        for method in dict.fromkeys(c.method for c in self.candidates):
            runs = [c for c in self.candidates if c.method == method]
            accuracy = [c.target_accuracy for c in runs if c.target_accuracy is not None]
            rows.append({"method": method, "seeds": [c.seed for c in runs],
                         self.criterion: round(float(np.mean([c.score(self.criterion) for c in runs])), 6),
                         "target_accuracy_mean": round(float(np.mean(accuracy)), 4) if accuracy else None,
                         "target_accuracy_std": round(float(np.std(accuracy)), 4) if accuracy else None,
                         "seconds_mean": round(float(np.mean([c.seconds for c in runs])), 1),
                         "chosen": method == self.chosen.method})
        return rows

    def record(self) -> dict[str, Any]:
        """What the saved run keeps: the criterion, what it chose, and every candidate's scores."""
        return {"criterion": self.criterion, "chosen": {"method": self.chosen.method, "seed": self.chosen.seed},
                "summary": self.summary(), "candidates": [c.record() for c in self.candidates]}


def choose(candidates: list[Candidate], select: str) -> Candidate:
    """The method with the best mean score over its seeds, then its best seed (ties: the first given)."""
    rule = criterion(select)
    methods = list(dict.fromkeys(c.method for c in candidates))
    means = [float(np.mean([c.score(select) for c in candidates if c.method == m])) for m in methods]
    runs = [c for c in candidates if c.method == methods[rule.best(means)]]
    return runs[rule.best([c.score(select) for c in runs])]


def adapt(data: Any, target: str, methods: Sequence[str], seeds: Sequence[int] = (0,), select: str = "info-max",
          target_test: str | None = None, bottleneck: int = 256, **params: Any) -> Adaptation:
    """Fit one :class:`DomainAdaptClassifier` per method and seed (``params``: its config, e.g. ``epochs``), and
    choose one by ``select`` (info-max, dev, entropy or source-val)."""
    criterion(select)
    if not methods:
        raise TransferkitError(f"name at least one method ({SOURCE_ONLY}, {', '.join(LOSS_TERMS.names())}; combine "
                               "terms with +)")
    terms = {method: method_terms(method) for method in methods}
    for specs in terms.values():  # every candidate's settings, before the first one trains
        DomainAdaptClassifier(target=target, target_test=target_test, bottleneck=bottleneck, methods=specs,
                              **params).check_target_settings(None)
    candidates = []
    for method in methods:
        for seed in seeds:
            log(f"adapt: {method}, seed {seed}")
            start = time.perf_counter()
            clf = DomainAdaptClassifier(target=target, target_test=target_test, bottleneck=bottleneck,
                                        methods=terms[method], **{**params, "seed": seed})
            clf.fit(data)
            done = Candidate(method, seed, clf, time.perf_counter() - start)
            candidates.append(done)
            accuracy = done.target_accuracy
            scored = f", target accuracy {accuracy:.4f} (reported, not used)" if accuracy is not None else ""
            log(f"adapt: {method}, seed {seed}: {select} {done.score(select):.4f}{scored}")
    result = Adaptation(candidates, select, choose(candidates, select))
    result.chosen.classifier.metrics_["adapt"].update(result.record())
    return result
