"""Which folders a run may be written to, checked before any work is done, and what a run folder holds.

Replacing a folder deletes what it held, so only a folder that is a transferkit run (every entry one a run
writes, and its model or config says transferkit wrote it) is ever replaced; anything else is an error, with
or without ``overwrite``. A run is never written into, over, or around its own data, nor over the current
folder. The same holds for a seeds folder (``train --seeds``: a ``seed-N`` run per seed and ``seeds.json``):
only one whose every entry is one of those, each run a transferkit run, is replaced, and only by another
seeds run; a single run never replaces it, nor it a single run. This module is torch- and numpy-free: the
CLI checks ``--out`` before it imports the heavy parts.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from transferkit.atomic import reason, write_problem
from transferkit.config import read_config_file
from transferkit.errors import RunDirError, arg

FILES = ("config.yaml", "classes.json", "preprocessing.json", "model.safetensors", "metrics.json")
# A fine-tuning run's checkpoints live in <run>/checkpoints (train.state writes them). The names are spelled
# here too so that checking and writing a probe's run folder never imports the training code (and torch).
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.safetensors"
BEST_CHECKPOINT = "best.safetensors"
PICKLED_CHECKPOINT = "last.pt"  # transferkit 0.1's pickled checkpoints: never loaded, since they could run code
CHECKPOINT_FILES = (LAST_CHECKPOINT, BEST_CHECKPOINT, "config.yaml", "metrics.jsonl", PICKLED_CHECKPOINT)
# Everything a run folder of any modality holds (a text run adds its tokenizer/ and encoder/). A modality that
# writes another entry into its runs must name it here, or its runs cannot be replaced.
RUN_ENGINE = "engine.onnx"  # a fine-tuned run's own feature engine, exported once when the run is saved
RUN_REPORT = "report.html"  # the one HTML report a run folder may hold (train --report writes it)
ADAPTER_FILE, ADAPTER_CONFIG = "adapter.safetensors", "adapter.json"  # an adapter alone, beside the merged model
# `adapt` with several candidates keeps every fitted one in <run>/candidates/<name>/, each a run folder
CANDIDATES_DIR = "candidates"
# `auto` keeps its Optuna study (a re-run resumes it) and the record of its choices in the run it saves
AUTO_STUDY, AUTO_DECISIONS = "auto.db", "decisions.json"
RUN_ENTRIES = (*FILES, "metrics.jsonl", CHECKPOINT_DIR, "tokenizer", "encoder", RUN_ENGINE, RUN_REPORT,
               ADAPTER_FILE, ADAPTER_CONFIG, CANDIDATES_DIR, AUTO_STUDY, AUTO_DECISIONS)
FORMAT_PREFIX = "transferkit-"  # model.safetensors' (and a checkpoint's) "format" metadata
# `train --seeds 0,1,2 --out RUN` writes a seeds folder: one run folder per seed (RUN/seed-0, ...) and its
# manifest RUN/seeds.json (whose "format" starts with FORMAT_PREFIX); runs/seeds.py writes and reads them.
SEEDS_FILE = "seeds.json"
SEED_PREFIX = "seed-"
MAX_MANIFEST = 1 << 20  # a seeds.json is a few kB; a larger file is not one transferkit wrote
MAX_HEADER = 1 << 24  # a safetensors header larger than this is not one transferkit wrote
LISTED = 3  # foreign entries named in a message
LOCK_SUFFIX = ".lock"  # runs/.x.lock: who writes runs/x (runs/lock.py); one a killed run left is harmless


def another_out() -> str:
    return "another " + arg("out", api="folder for the run")


def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / CHECKPOINT_DIR


def safetensors_format(path: Path) -> str:
    """The ``format`` in a safetensors file's metadata, read from its header alone ("" if there is none)."""
    try:
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size)) if size <= MAX_HEADER else {}
        value = header.get("__metadata__", {}).get("format", "")
        return value if isinstance(value, str) else ""
    except (OSError, ValueError, struct.error, AttributeError):
        return ""


def foreign_entries(path: Path, ignore: tuple[str, ...] = ()) -> list[str]:
    """Entries of ``path`` that no transferkit run writes (``checkpoints/x`` for one inside checkpoints)."""
    found = []
    for entry in sorted(path.iterdir()):
        if entry.name in ignore:
            continue
        if entry.name == CHECKPOINT_DIR and entry.is_dir():
            found += [f"{CHECKPOINT_DIR}/{inner.name}" for inner in sorted(entry.iterdir())
                      if inner.name not in CHECKPOINT_FILES and not is_temporary(inner.name)]
        elif entry.name == CANDIDATES_DIR and entry.is_dir():
            found += [f"{CANDIDATES_DIR}/{inner.name}" for inner in sorted(entry.iterdir())
                      if not is_temporary(inner.name) and (inner.is_symlink() or not is_run_folder(inner))]
        elif entry.name not in RUN_ENTRIES:
            found.append(entry.name)
    return found


def is_temporary(name: str) -> bool:
    """A file an atomic writer had not renamed yet when its process was killed (``.last.safetensors.*.tmp``),
    or the lock file of a run folder beside it (``.seed-0.lock`` in a seeds folder)."""
    return name.startswith(".") and name.endswith((".tmp", LOCK_SUFFIX))


def signed_by_transferkit(path: Path) -> bool:
    """The folder's model, config or checkpoints say transferkit wrote them (a damaged model is not needed)."""
    if safetensors_format(path / "model.safetensors").startswith(FORMAT_PREFIX):
        return True
    checkpoints = path / CHECKPOINT_DIR
    if checkpoints.is_dir() and any((checkpoints / name).is_file() for name in CHECKPOINT_FILES):
        return True
    candidates = path / CANDIDATES_DIR  # an adaptation stopped before its chosen model was saved
    if candidates.is_dir() and any(is_run_folder(p) for p in candidates.iterdir()):
        return True
    return is_run_config(path / "config.yaml")


def is_run_config(path: Path) -> bool:
    try:
        data = read_config_file(path)
    except Exception:  # noqa: BLE001 - any unreadable file is simply not a run's config
        return False
    return {"backbone", "strategy"} <= set(data)


def is_seed_name(name: str) -> bool:
    """``seed-0``, ``seed-17``: the name of one seed's run in a seeds folder."""
    digits = name.removeprefix(SEED_PREFIX)
    return name.startswith(SEED_PREFIX) and digits.isascii() and digits.isdigit()


def is_seeds_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder ``train --seeds`` wrote: its manifest and ``seed-N`` runs, nothing else
    (an interrupted save's temporary folders aside), and the manifest or a run says transferkit wrote it."""
    path = Path(path)
    if not path.is_dir():
        return False
    entries = [p for p in path.iterdir() if not is_temporary(p.name)]
    runs = [p for p in entries if is_seed_name(p.name)]
    if any(p.name != SEEDS_FILE and not is_seed_name(p.name) for p in entries):
        return False
    if not all(is_run_folder(p) and not p.is_symlink() for p in runs):  # a link's target is not ours to replace
        return False
    manifest = path / SEEDS_FILE
    return bool(runs) if not manifest.exists() else json_format(manifest).startswith(FORMAT_PREFIX)


def json_format(path: Path) -> str:
    """The ``format`` of a small JSON object file ("" when it is not one)."""
    try:
        with open(path, "rb") as handle:
            value = json.loads(handle.read(MAX_MANIFEST)).get("format", "")
        return value if isinstance(value, str) else ""
    except (OSError, ValueError, AttributeError, RecursionError):
        return ""


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a transferkit run folder (finished, or a fine-tuning run's ``checkpoints`` only)."""
    path = Path(path)
    return path.is_dir() and not foreign_entries(path) and signed_by_transferkit(path)


def check_writable(path: str | Path, overwrite: bool, ignore: tuple[str, ...] = (), resumable: bool = True) -> None:
    """Fail before any work is done unless a run can be written to ``path``: it is new, empty, or a run and
    ``overwrite`` is set; it is not the current folder; and its folder can be written to.

    Entries named in ``ignore`` (a fine-tuning run's ``checkpoints``, which it keeps) do not count;
    ``resumable=False``: the command has no way to resume an unfinished run (tune, adapt), so none is offered.
    """
    path = Path(path)
    here, target = Path.cwd().resolve(), path.resolve()
    if target == here or (path.exists() and here.is_relative_to(target)):
        raise RunDirError(f"{path}: is the current folder{'' if target == here else ' or holds it'}, which saving the "
                          "run would replace under your shell; run transferkit from outside it, or choose "
                          f"{another_out()} (e.g. runs/NAME)")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path}: exists and is not a folder; choose {another_out()}")
    if path.is_dir():
        try:
            check_replaceable(path, overwrite, ignore, resumable)
        except OSError as exc:  # a folder that cannot be listed cannot be known to be a run
            raise RunDirError(f"{path}: cannot read it ({reason(exc)}); choose {another_out()}") from None
    for folder in (path.parent, path) if path.is_dir() else (path.parent,):
        problem = write_problem(folder)
        if problem:
            raise RunDirError(f"{path}: cannot write the run there ({problem}); choose {another_out()}")


def check_replaceable(path: Path, overwrite: bool, ignore: tuple[str, ...], resumable: bool = True) -> None:
    entries = [p.name for p in path.iterdir() if p.name not in ignore]
    if not entries:
        return
    foreign = foreign_entries(path, ignore)
    if foreign and is_seeds_folder(path):  # transferkit's, but a folder of runs: only --seeds replaces it
        raise RunDirError(f"{path}: holds one run per seed, not one run; replace them with "
                          f"{arg('seeds', api='fit_seeds()')} and {arg('overwrite', True)}, or choose {another_out()}")
    if foreign or not signed_by_transferkit(path):
        listing = ", ".join((foreign or entries)[:LISTED]) + (" ..." if len(foreign or entries) > LISTED else "")
        raise RunDirError(f"{path}: holds files that are not a transferkit run ({listing}), so it is never replaced; "
                          f"choose {another_out()}: a new or empty folder")
    if overwrite:
        return
    if entries == [CHECKPOINT_DIR]:
        resume = f"pass {arg('resume', True)} to continue it, " if resumable else "pass "
        raise RunDirError(f"{path}: holds an unfinished training run; {resume}{arg('overwrite', True)} to start "
                          f"again, or choose {another_out()}")
    raise RunDirError(f"{path}: already holds a run; pass {arg('overwrite', True)} to replace it, or choose "
                      f"{another_out()}")


def check_out_vs_data(out: str | Path, *data: object) -> None:
    """A run folder is never the data, inside it, or around it (replacing the run would delete the data).
    ``data`` are the data paths of the run (train, val, test; None and non-paths are skipped)."""
    target = Path(out).expanduser().resolve()
    for given in data:
        if not isinstance(given, (str, Path)) or not str(given):
            continue
        source = Path(given).expanduser().resolve()
        what = "folder" if source.is_dir() else "file"
        if target == source:
            raise RunDirError(f"{out}: is the data {what} itself; choose {another_out()}")
        if target.is_relative_to(source):
            raise RunDirError(f"{out}: is inside the data folder {given}; choose {another_out()}, outside "
                              "it")
        if source.is_relative_to(target):
            raise RunDirError(f"{out}: holds the data {what} {given}; choose {another_out()}, one that does not "
                              "contain the data")
