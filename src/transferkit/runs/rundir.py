"""A run directory: everything needed to reuse, evaluate, export or reproduce a trained model.

    config.yaml          the full RunConfig (``transferkit train --config`` re-runs it)
    classes.json         class names, in output order
    preprocessing.json   input size, mean/std, interpolation, crop
    model.safetensors    one module: ``features.*`` (normalisation + backbone) and ``head.*``;
                         its metadata names the architecture and the backbone fingerprint
    metrics.json         validation (and test) metrics, timings, what was skipped

A text run adds ``tokenizer/`` and ``encoder/config.json``; a fine-tuned run ``metrics.jsonl`` and, saved
where it trained, ``checkpoints/`` (last.safetensors, best.safetensors, config.yaml, metrics.jsonl).

Runs are written to a temporary sibling folder and renamed into place, so an interrupted save never leaves
a half-written run, and an existing run is only replaced with ``overwrite=True`` (a folder that is not a run
never is: see runs/folders.py). Reading a run checks every file, so a damaged one is a :class:`RunDirError`
naming it, never a traceback from a parser.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from transferkit.atomic import reason
from transferkit.config import RunConfig, read_config_file
from transferkit.errors import RunDirError, TransferkitError
from transferkit.runs.folders import (CHECKPOINT_DIR, FILES, LAST_CHECKPOINT, PICKLED_CHECKPOINT, another_out,
                                      check_out_vs_data, check_writable, checkpoint_dir, is_seeds_folder)
from transferkit.runs.integrity import check_classes, check_metrics, check_model_meta
from transferkit.runs.schema import MAX_METRICS, damaged, read_json_file

# names that callers import from here, where they have always been
__all__ = ["CHECKPOINT_DIR", "FILES", "LAST_CHECKPOINT", "PICKLED_CHECKPOINT", "RunFiles", "check_out_vs_data",
           "check_writable", "checkpoint_dir", "read_model_meta", "read_run", "read_tensors", "run_format",
           "training_files", "write_run"]
HEAD = ("head.weight", "head.bias")
RUN_CONFIG_KEYS = {"data", "backbone", "strategy", "seed"}  # in every run's config.yaml since the first


@dataclass
class RunFiles:
    config: RunConfig
    classes: list[Any]
    preprocessing: dict[str, Any]  # as the modality wrote it (images: Preprocessing.to_dict())
    model_meta: dict[str, str]
    metrics: dict[str, Any]
    path: Path

    @property
    def model_path(self) -> Path:
        return self.path / "model.safetensors"


def write_run(path: str | Path, *, config: RunConfig, classes: list[Any], preprocessing: dict[str, Any],
              tensors: dict[str, np.ndarray], model_meta: dict[str, str], metrics: dict[str, Any],
              overwrite: bool = False, keep: tuple[str, ...] = (), extra_files: dict[str, bytes] | None = None,
              add_files: Callable[[Path], None] | None = None) -> Path:
    """Write the run atomically; entries named in ``keep`` move over from the existing folder (checkpoints).

    ``add_files(staging_folder)`` writes anything else the run needs (a text run's tokenizer) before the
    folder is renamed into place. A failure to write (a full disk, a folder made read-only meanwhile) is a
    :class:`RunDirError` naming the folder, and leaves the folder as it was.
    """
    from safetensors import SafetensorError

    path = Path(path)
    check_writable(path, overwrite, ignore=keep)
    target = Path(os.path.abspath(path))  # "runs/x/.." has no name to put a staging folder beside
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        write_files(staging, config, classes, preprocessing, tensors, model_meta, metrics, extra_files or {})
        if add_files is not None:
            add_files(staging)
        for name in keep:
            if (target / name).exists():
                os.replace(target / name, staging / name)
        swap_into_place(staging, target)
    except (OSError, SafetensorError) as exc:
        raise RunDirError(f"{path}: cannot write the run ({reason(exc)}); free some space, or choose "
                          f"{another_out()}") from None
    finally:
        for name in keep:  # a failed save must not take the checkpoints with it
            if (staging / name).exists() and target.is_dir() and not (target / name).exists():
                os.replace(staging / name, target / name)
        shutil.rmtree(staging, ignore_errors=True)
    return path


def write_files(folder: Path, config: RunConfig, classes: list[Any], preprocessing: dict[str, Any],
                tensors: dict[str, np.ndarray], model_meta: dict[str, str], metrics: dict[str, Any],
                extra_files: dict[str, bytes]) -> None:
    from safetensors.numpy import save_file

    config.to_yaml(folder / "config.yaml")
    (folder / "classes.json").write_text(json.dumps(classes, indent=1))
    (folder / "preprocessing.json").write_text(json.dumps(preprocessing, indent=1))
    model = folder / "model.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(model),
              metadata={k: str(v) for k, v in model_meta.items()})
    # safetensors creates its file 0600; the model is shared exactly as the other run files are
    os.chmod(model, (folder / "classes.json").stat().st_mode & 0o777)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
    for name, data in extra_files.items():
        (folder / name).write_bytes(data)


def swap_into_place(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an existing ``target`` is moved aside first and removed only once
    the new run is in place (if that rename fails, the old run is put back)."""
    if not target.exists():
        os.replace(staging, target)
        return
    old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_run(path: str | Path, required: tuple[str, ...] = ()) -> RunFiles:
    """The common files of a run folder, each read with a cap and checked against its schema, and checked to
    agree with each other (runs/integrity.py); ``required`` names what else must be there (a text run's
    tokenizer). The preprocessing is checked by the modality that reads it.

    A run's stored paths are hints for reading at most: its ``cache_dir`` is never written to (a copied or shared
    run could name any folder), so the run reads as using the default cache unless the caller names another."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: run folder not found; pass the --out folder of `transferkit train`")
    missing = [name for name in FILES if not (path / name).is_file()]
    missing += [name for name in required if not (path / name).exists()]
    if missing and is_seeds_folder(path):
        raise RunDirError(f"{path}: holds one run per seed (train --seeds); pass one of them ({path / 'seed-N'}), "
                          "or compare the folder")
    if missing:
        raise RunDirError(f"{path}: not a complete run (missing {', '.join(missing)}); train again into it")
    config = read_run_config(path / "config.yaml")
    classes = check_classes(path / "classes.json", read_json_file(path / "classes.json"))
    preprocessing = read_json_file(path / "preprocessing.json")
    if not isinstance(preprocessing, dict):
        raise damaged(path / "preprocessing.json", "", "expected an object")
    model = path / "model.safetensors"
    head = check_head(path, model, len(classes))
    return RunFiles(config=config.replace(cache_dir=None), classes=classes, preprocessing=preprocessing,
                    model_meta=check_model_meta(model, read_model_meta(model), head, len(classes)),
                    metrics=check_metrics(path / "metrics.json", read_json_file(path / "metrics.json", MAX_METRICS),
                                          len(classes)), path=path)


def read_run_config(source: Path) -> RunConfig:
    """A run's config.yaml: one transferkit wrote names every field (older versions: all but the newest)."""
    try:
        data = read_config_file(source)
        if not RUN_CONFIG_KEYS <= set(data):
            raise TransferkitError(f"{source}: lacks {', '.join(sorted(RUN_CONFIG_KEYS - set(data)))}")
        return RunConfig.from_dict(data, str(source))
    except TransferkitError as exc:
        raise RunDirError(f"{source}: damaged ({str(exc).removeprefix(f'{source}: ')}); train the run "
                          "again") from None


def read_json(path: Path, kind: type, expected: str) -> Any:
    """A small JSON file of a run (read with a cap), of type ``kind``."""
    value = read_json_file(path)
    if not isinstance(value, kind):
        raise damaged(path, "", f"expected {expected}")
    return value


def check_head(path: Path, model: Path, n_classes: int) -> list[int]:
    """The model has a head, and it has one output per class in classes.json: the head's shape."""
    shapes = tensor_shapes(model)
    weight, bias = (shapes.get(name) for name in HEAD)
    if weight is None or bias is None or len(weight) != 2 or list(bias) != weight[:1]:
        raise RunDirError(f"{model}: damaged (no head.weight/head.bias of matching shapes); train the "
                          "run again")
    if weight[0] != n_classes:
        raise RunDirError(f"{path}: model.safetensors has {weight[0]} outputs but classes.json lists "
                          f"{n_classes} classes; the files come from different runs: train it again")
    return weight


def read_model_meta(model: str | Path) -> dict[str, str]:
    """The metadata of a ``model.safetensors`` (format, backbone, fingerprint, ...), without torch."""
    from safetensors import safe_open

    with opened(model):
        with safe_open(str(model), framework="numpy") as handle:
            return dict(handle.metadata() or {})


def tensor_shapes(model: str | Path) -> dict[str, list[int]]:
    """Each tensor's shape, from the header alone."""
    from safetensors import safe_open

    with opened(model):
        with safe_open(str(model), framework="numpy") as handle:
            return {k: list(handle.get_slice(k).get_shape()) for k in handle.keys()}


def run_format(path: str | Path) -> str:
    """The ``format`` a run folder's model was saved in ("" when there is no readable model)."""
    try:
        return read_model_meta(Path(path) / "model.safetensors").get("format", "")
    except RunDirError:  # missing, truncated or not safetensors: no format
        return ""


def read_tensors(path: str | Path, prefix: str = "") -> dict[str, np.ndarray]:
    """Tensors whose name starts with ``prefix`` (prefix removed), without importing torch."""
    from safetensors import safe_open

    with opened(path):
        with safe_open(str(path), framework="numpy") as handle:
            return {k[len(prefix):]: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefix)}


@contextmanager
def opened(path: str | Path) -> Iterator[None]:
    """Turns any failure to read a safetensors file into one :class:`RunDirError` naming it."""
    try:
        yield
    except TransferkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - the parser's errors (SafetensorError, OSError, ...) mean damage
        raise RunDirError(f"{path}: damaged or not a safetensors file ({reason(exc)}); train the run "
                          "again") from None


def training_files(target: str | Path, checkpoints: Path | None,
                   history: list[dict[str, Any]]) -> tuple[tuple[str, ...], dict[str, bytes]]:
    """(``keep``, ``extra_files``) for :func:`write_run` of a fine-tuned model: saved into its own training
    folder, the checkpoints stay with it; elsewhere, the per-epoch history goes along as ``metrics.jsonl``."""
    if checkpoints is not None and Path(target).resolve() == checkpoints.parent.resolve():
        extra = {}
        if (checkpoints / "metrics.jsonl").is_file():
            extra["metrics.jsonl"] = (checkpoints / "metrics.jsonl").read_bytes()
        return (checkpoints.name,), extra
    return (), {"metrics.jsonl": "".join(json.dumps(r) + "\n" for r in history).encode()}
