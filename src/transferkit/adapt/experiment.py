"""Several adapted models, one choice made without target labels: each method is fitted once per seed, every
model is scored by every selection criterion (selection.py), and the chosen criterion picks the method (its
mean over seeds) and then that method's seed. Target accuracy, when the target is labelled, is reported for
every candidate and never consulted."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transferkit.adapt.estimator import DomainAdaptClassifier
from transferkit.adapt.selection import criterion
from transferkit.config import RunConfig
from transferkit.errors import TransferkitError, first_line
from transferkit.estimators.image import ImageClassifier
from transferkit.plugins import LOSS_TERMS, SOURCE_ONLY
from transferkit.progress import log
from transferkit.runs.folders import CANDIDATES_DIR, is_run_folder


# Adaptation's own defaults, beside what the data settles: BatchNorm's statistics train on the batches of both
# domains (frozen, they stay the source's; bench/adapt.py trains them)
ADAPT_DEFAULTS = {"bn": "train"}


def data_defaults(data: Any, given: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """The settings the source ``data`` settles where ``given`` (RunConfig fields) has none, each with why: what
    ``auto`` derives (the modality's ``derive``: the input size from the images' own resolution, augmentation
    for digits and scans), and :data:`ADAPT_DEFAULTS`."""
    config = RunConfig(data=str(data), **{"strategy": "finetune", **given})
    config.validate()
    reader = ImageClassifier(**{k: v for k, v in config.to_dict().items() if k != "data"})
    with contextlib.redirect_stderr(io.StringIO()):  # the fit reads the data again and says what it skips: once
        dataset = reader.read_data(config.data, None, config.val_data, config)
    derived: dict[str, tuple[Any, str]] = {}
    reader.modality.derive(dataset, config, lambda name, value, why, larger=(): derived.setdefault(name, (value, why)))
    derived.update({k: (v, "adaptation's default") for k, v in ADAPT_DEFAULTS.items()})
    return {k: v for k, v in derived.items() if k not in given}


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
        scored = self.classifier.metrics_.get("target")  # absent when the target has no labels
        return None if scored is None else scored["accuracy"]

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


def candidate_folder(out: Path, index: int, method: str, seed: int) -> Path:
    """``out/candidates/<n>-<method>-seed-<seed>``: the method spec made a file name (``dann:hidden=32`` ->
    ``dann_hidden=32``), numbered so that two specs that read alike never share a folder."""
    name = re.sub(r"[^A-Za-z0-9.=+-]+", "_", method.strip())[:60]
    return out / CANDIDATES_DIR / f"{index}-{name}-seed-{seed}"


@dataclass
class Keeper:
    """Where trained candidates are saved, as soon as each is trained: with one candidate, ``out`` itself;
    with several, each in its own :func:`candidate_folder` (the chosen one then also at ``out``). Without
    ``out`` (the Python API), nothing is saved."""

    out: Path | None
    several: bool
    overwrite: bool
    saved: list[Path] = field(default_factory=list)

    def save(self, candidate: Candidate, index: int) -> None:
        if self.out is None or not self.several:
            return
        folder = candidate_folder(self.out, index, candidate.method, candidate.seed)
        candidate.classifier.save(folder, overwrite=self.overwrite)
        self.saved.append(folder)

    def save_chosen(self, chosen: Candidate) -> None:
        if self.out is None:
            return
        kept = (CANDIDATES_DIR,) if self.several else ()
        for stale in self.stale():  # an earlier adaptation's, in the run folder --overwrite replaces
            shutil.rmtree(stale)
        chosen.classifier.save(self.out, overwrite=self.overwrite or self.several, keep=kept)

    def stale(self) -> list[Path]:
        folder = None if self.out is None else self.out / CANDIDATES_DIR
        if folder is None or not folder.is_dir():
            return []
        return [p for p in folder.iterdir() if p not in self.saved and is_run_folder(p) and not p.is_symlink()]

    def rescue(self, candidates: list[Candidate]) -> str | None:
        """After a failure: save what is not saved yet; where the trained models are (None: nowhere)."""
        if self.out is None or not candidates:
            return None
        if not self.several:
            candidates[0].classifier.save(self.out, overwrite=self.overwrite)
            return f"the trained model is saved in {self.out} (a run folder)"
        return f"the {len(self.saved)} candidate(s) trained so far are saved in {self.out / CANDIDATES_DIR} " \
               "(a run folder each)" if self.saved else None


def adapt(data: Any, target: str, methods: Sequence[str], seeds: Sequence[int] = (0,), select: str = "info-max",
          target_test: str | None = None, bottleneck: int = 256, out: str | Path | None = None,
          overwrite: bool = False, **params: Any) -> Adaptation:
    """Fit one :class:`DomainAdaptClassifier` per method and seed (``params``: its config, e.g. ``epochs``; the
    input size, augmentation and BatchNorm mode default to what the data settles, :func:`data_defaults`), and
    choose one by ``select`` (info-max, dev, entropy or source-val). With ``out``, the chosen model is saved
    there, and every candidate is saved as soon as it is trained (several: in ``out/candidates/``), so a
    failure after training never loses one; the error names where they are."""
    criterion(select)
    if not methods:
        raise TransferkitError(f"name at least one method ({SOURCE_ONLY}, {', '.join(LOSS_TERMS.names())}; combine "
                               "terms with +)")
    terms = {method: method_terms(method) for method in methods}
    for specs in terms.values():  # every candidate's settings, before the first one trains
        DomainAdaptClassifier(target=target, target_test=target_test, bottleneck=bottleneck, methods=specs,
                              **params).check_target_settings(out)
    derived = data_defaults(data, params)  # what the source data settles where params say nothing, as auto derives it
    if derived:
        log("adapt: " + "; ".join(f"{k} {v} ({why})" for k, (v, why) in derived.items()))
    params = {**params, **{k: v for k, (v, _) in derived.items()}}
    keeper = Keeper(None if out is None else Path(out), len(methods) * len(seeds) > 1, overwrite)
    candidates: list[Candidate] = []
    try:
        for method in methods:
            for seed in seeds:
                log(f"adapt: {method}, seed {seed}")
                start = time.perf_counter()
                clf = DomainAdaptClassifier(target=target, target_test=target_test, bottleneck=bottleneck,
                                            methods=terms[method], **{**params, "seed": seed})
                clf.fit_network(data)
                candidates.append(Candidate(method, seed, clf, time.perf_counter() - start))
                try:  # saved whether or not scoring succeeds, before anything is reported
                    clf.score_adaptation()
                finally:
                    keeper.save(candidates[-1], len(candidates))
                report(candidates[-1], select)
        result = Adaptation(candidates, select, choose(candidates, select))
        result.chosen.classifier.metrics_["adapt"].update(result.record())
    except BaseException as exc:
        where = keeper.rescue(candidates)
        if where is None:
            raise
        if not isinstance(exc, Exception):  # Ctrl-C: stop as asked, having said where the work is
            log(f"adapt: stopped; {where}")
            raise
        kind = type(exc) if isinstance(exc, TransferkitError) else TransferkitError
        raise kind(f"{first_line(exc)}; {where}") from exc
    keeper.save_chosen(result.chosen)
    return result


def report(candidate: Candidate, select: str) -> None:
    accuracy = candidate.target_accuracy
    scored = f", target accuracy {accuracy:.4f} (reported, not used)" if accuracy is not None else ""
    log(f"adapt: {candidate.method}, seed {candidate.seed}: {select} {candidate.score(select):.4f}{scored}")
