"""One configuration, several seeds (``transferkit train DATA --seeds 0,1,2 --out RUN``), read back as one group
(``transferkit compare RUN``).

    RUN/seeds.json   {"format": "transferkit-seeds-1", "seeds": [0, 1, 2], "summary": {metric: spread}}
    RUN/seed-0/      one complete run folder per seed; their configs differ in ``seed`` alone, and predict,
    RUN/seed-1/      evaluate, report and export read any one of them as they read any run
    ...

The manifest is written before the first fit, so an interrupted seeds run is still a folder transferkit wrote
(``--overwrite`` may replace it, a seed's fine-tuning run may be resumed in place), and again with the summary
at the end. Only a seeds folder is ever replaced by another (runs/folders.py: ``is_seeds_folder``); a single
run or anything else never is.

Every run's metrics also record which items it was scored on (``fit`` calls
:func:`transferkit.metrics.record_scored_items`): with the per-item ``correct`` string, two runs or seed groups
scored on the same items get a paired verdict (:func:`paired_verdict`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from transferkit.atomic import atomic_write_bytes, reason, write_problem
from transferkit.confidence import paired_bootstrap, t_interval
from transferkit.metrics import scored_split
from transferkit.errors import RunDirError, TransferkitError, arg
from transferkit.runs.folders import (FORMAT_PREFIX, LISTED, SEED_PREFIX, SEEDS_FILE, another_out, check_writable,
                                      is_run_folder, is_seed_name, is_seeds_folder)
from transferkit.runs.rundir import RunFiles, read_json, read_run

MANIFEST_FORMAT = f"{FORMAT_PREFIX}seeds-1"
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds both take it
# (split, metric) pairs whose spread over seeds a group shows, keyed "val_accuracy", ... as compare's rows
METRICS = (("val", "accuracy"), ("val", "macro_f1"), ("test", "accuracy"), ("test", "macro_f1"))


def parse_seeds(spec: str, at_least: int = 2) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``: ``at_least`` (default two) or more distinct integers in [0, 2^32)."""
    parts = [part.strip() for part in spec.split(",")]
    if not all(part.isascii() and part.isdigit() for part in parts):
        raise TransferkitError(f"{arg('seeds', spec)}: expected integers >= 0 separated by commas (e.g. 0,1,2)")
    seeds = [int(part) for part in parts]
    if max(seeds) > MAX_SEED:
        raise TransferkitError(f"{arg('seeds', spec)}: a seed is at most {MAX_SEED}")
    if len(set(seeds)) < len(seeds):
        raise TransferkitError(f"{arg('seeds', spec)}: names a seed twice; give each seed once")
    if len(seeds) < at_least:  # the point of several seeds is their spread
        raise TransferkitError(f"{arg('seeds', spec)}: give two seeds or more (one seed has no spread; "
                               f"{arg('seed', api='seed=')} sets the seed of one run)")
    return seeds


def seed_folder(out: str | Path, seed: int) -> Path:
    return Path(out) / f"{SEED_PREFIX}{seed}"


def stale_seed_runs(out: Path, seeds: Sequence[int]) -> list[Path]:
    """Runs of seeds not in ``seeds`` in an existing seeds folder (an earlier, longer list): replaced with it."""
    if not out.is_dir():
        return []
    keep = {seed_folder(out, seed).name for seed in seeds}
    return sorted(p for p in out.iterdir() if is_seed_name(p.name) and p.name not in keep)


def check_seeds_out(out: str | Path, seeds: Sequence[int], overwrite: bool) -> None:
    """Before any work: ``out`` is new, empty, or a seeds folder (replaced only with ``overwrite``), and can be
    written; never a single run or a folder of anything else. Each seed's run folder is checked as any run's
    (by the caller, or by ``fit`` and ``save``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a folder; choose {another_out()}")
    try:
        entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
        seeds_folder = bool(entries) and is_seeds_folder(out)
    except OSError as exc:  # a folder that cannot be listed cannot be known to be transferkit's
        raise RunDirError(f"{out}: cannot read it ({reason(exc)}); choose {another_out()}") from None
    if entries and not seeds_folder:
        if is_run_folder(out):
            raise RunDirError(f"{out}: holds a single run, which the runs of several seeds never replace; choose "
                              f"{another_out()}")
        listing = ", ".join(entries[:LISTED]) + (" ..." if len(entries) > LISTED else "")
        raise RunDirError(f"{out}: holds files that are not transferkit runs ({listing}), so it is never replaced; "
                          f"choose {another_out()}: a new or empty folder")
    if seeds_folder and not overwrite:
        raise RunDirError(f"{out}: already holds the runs of several seeds; pass {arg('overwrite', True)} to "
                          f"replace them, or choose {another_out()}")
    for stale in stale_seed_runs(out, seeds):  # removed at the end: each must be a run, and not hold the shell
        check_writable(stale, overwrite=True)
    problem = write_problem(out)
    if problem:
        raise RunDirError(f"{out}: cannot write the runs there ({problem}); choose {another_out()}")


def write_manifest(out: Path, seeds: Sequence[int], summary: dict[str, Any] | None = None) -> dict[str, Any]:
    manifest = {"format": MANIFEST_FORMAT, "seeds": list(seeds), "runs": [seed_folder(out, s).name for s in seeds]}
    if summary is not None:
        manifest["summary"] = summary
    atomic_write_bytes(out / SEEDS_FILE, json.dumps(manifest, indent=1).encode())
    return manifest


def fit_seeds(new_classifier: Callable[[int], Any], data: Any, seeds: Sequence[int], out: str | Path,
              overwrite: bool = False, on_saved: Callable[[Path, Any], None] | None = None) -> dict[str, Any]:
    """Fit ``new_classifier(seed)`` (an unfitted classifier whose config has that seed) on ``data`` once per
    seed, each saved into ``out/seed-N``; returns the manifest written to ``out/seeds.json``, with the spread
    of each metric over the seeds. ``on_saved(folder, classifier)`` runs after each save."""
    out, seeds = Path(out), list(seeds)
    if not seeds or len(set(seeds)) < len(seeds) or not all(type(s) is int and 0 <= s <= MAX_SEED for s in seeds):
        raise TransferkitError(f"seeds={seeds!r}: expected distinct integers in [0, 2^32)")
    check_seeds_out(out, seeds, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, seeds)  # first: an interrupted seeds run is still a folder transferkit wrote
    metrics, main = [], True
    for seed in seeds:
        folder, clf = seed_folder(out, seed), new_classifier(seed)
        if clf.config.seed != seed:
            raise TransferkitError(f"new_classifier({seed}) made a classifier with seed {clf.config.seed}; give it "
                                   "the seed it is called with")
        clf.fit(data, out=folder)
        main = getattr(clf, "is_main_process_", True)
        if not main:
            continue  # other ranks of a multi-process run: rank 0 saves
        clf.save(folder, overwrite=overwrite)
        metrics.append(clf.metrics_)
        if on_saved is not None:
            on_saved(folder, clf)
    if not main:
        return {}
    for stale in stale_seed_runs(out, seeds):  # checked before the work, and again now: only runs go
        if is_run_folder(stale) and not stale.is_symlink():
            shutil.rmtree(stale)
    return write_manifest(out, seeds, summarize(metrics))


def summarize(metrics: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"val_accuracy": {"n", "mean", "std", "low", "high"}, ...}`` for each metric every run has."""
    summary = {}
    for split, key in METRICS:
        values = [m[split].get(key) for m in metrics if isinstance(m.get(split), dict)]
        if values and len(values) == len(metrics) and all(isinstance(v, (int, float)) for v in values):
            summary[f"{split}_{key}"] = t_interval(values).to_dict()
    return summary


# -- reading a group back ------------------------------------------------------------------------------------
@dataclass
class SeedGroup:
    """A seeds folder as read back: its seeds and their runs, in the manifest's order."""

    path: Path
    seeds: list[int]
    runs: list[RunFiles]

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return [run.metrics for run in self.runs]


def is_seed_group(path: str | Path) -> bool:
    """A folder with a seeds manifest (``compare`` reads it as a group, and says what is wrong with it)."""
    return (Path(path) / SEEDS_FILE).is_file()


def read_seed_group(path: str | Path) -> SeedGroup:
    """The runs a seeds folder lists, each read as any run, and checked to be seeds of one configuration."""
    path = Path(path)
    manifest = read_json(path / SEEDS_FILE, dict, "an object")
    seeds = manifest.get("seeds")
    if (manifest.get("format") != MANIFEST_FORMAT or not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise RunDirError(f"{path / SEEDS_FILE}: damaged (expected {MANIFEST_FORMAT} with a list of seeds); train "
                          "the seeds again")
    runs = []
    for seed in seeds:
        folder = seed_folder(path, seed)
        if not (folder / "metrics.json").is_file():
            raise RunDirError(f"{folder}: the run of seed {seed} is missing or unfinished; resume it (train --resume "
                              f"--out {folder}) or train the seeds again with --overwrite")
        runs.append(read_run(folder))
    check_one_configuration(path, seeds, runs)
    return SeedGroup(path, seeds, runs)


def check_one_configuration(path: Path, seeds: list[int], runs: list[RunFiles]) -> None:
    """Each run has its seed, and the same config otherwise (a mix is an interrupted --overwrite's leftover)."""
    first = {k: v for k, v in runs[0].config.to_dict().items() if k != "seed"}
    for seed, run in zip(seeds, runs):
        config = run.config.to_dict()
        if config.pop("seed") != seed:
            raise RunDirError(f"{run.path}: its config has seed {run.config.seed}, not {seed}; train the seeds again")
        differ = sorted(k for k in first if config.get(k) != first[k])
        if differ:
            raise RunDirError(f"{path}: the run of seed {seed} differs from seed {seeds[0]}'s in "
                              f"{', '.join(differ[:LISTED])}, so they are not seeds of one configuration; train "
                              "the seeds again")


# -- paired verdict -----------------------------------------------------------------------------------------
def paired_verdict(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], names: tuple[str, str]) -> dict[str, Any]:
    """The paired bootstrap of B over A (each a list of runs' metrics: one run, or one per seed) on the items
    both were scored on: ``{"split", "items", "gain", "low", "high", ..., "outside_noise"}`` in points, or
    ``{"reason": ...}``, one line saying why there is no verdict."""
    sides = []
    for runs, name in zip((a, b), names):
        side = scored_side(runs, name)
        if isinstance(side, str):
            return {"reason": side}
        sides.append(side)
    (split_a, digest_a, correct_a), (split_b, digest_b, correct_b) = sides
    if (split_a, digest_a) != (split_b, digest_b):
        if split_a != split_b:
            return {"reason": f"{names[0]} was scored on its {split_a} split, {names[1]} on its {split_b} split"}
        return {"reason": f"{names[0]} and {names[1]} were scored on different {split_a} items"}
    verdict = paired_bootstrap(correct_a, correct_b)
    return {"split": split_a, **verdict.to_dict(), "sentence": verdict.sentence()}


def scored_side(runs: Sequence[dict[str, Any]], name: str) -> tuple[str, str, np.ndarray] | str:
    """(split, items digest, correctness [runs, items]) of one side, or why it cannot be paired."""
    splits = {scored_split(m) for m in runs}
    if None in splits:
        return f"{name} has no validation or test scores"
    if len(splits) > 1:
        return f"the seeds of {name} were scored on different splits"
    split = splits.pop()
    records = [m[split] for m in runs]
    if not all(isinstance(r.get("correct"), str) for r in records):
        return f"{name} does not record its per-item results (an older transferkit); train it again"
    if not all(isinstance(r.get("items"), str) for r in records):
        return f"{name} does not record which items it was scored on (data given in memory?)"
    if len({r["items"] for r in records}) > 1:
        return (f"the seeds of {name} were scored on different {split} items (a validation split drawn with each "
                "seed); give them a fixed test split")
    rows = [np.frombuffer(r["correct"].encode("ascii", "replace"), np.uint8) - ord("0") for r in records]
    if any(len(row) != r.get("n") or (row > 1).any() for row, r in zip(rows, records)):
        return f"{name}: its per-item results are damaged; train it again"
    return split, records[0]["items"], np.stack(rows)
