"""A run directory: everything needed to reuse, evaluate, export or reproduce a trained model.

    config.yaml          the full RunConfig (``transferkit train --config`` re-runs it)
    classes.json         class names, in output order
    preprocessing.json   input size, mean/std, interpolation, crop
    model.safetensors    one module: ``features.*`` (normalisation + backbone) and ``head.*``;
                         its metadata names the architecture and the backbone fingerprint
    metrics.json         validation (and test) metrics, timings, what was skipped

Runs are written to a temporary sibling folder and renamed into place, so an interrupted save never leaves
a half-written run, and an existing run is only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from transferkit.config import RunConfig
from transferkit.errors import RunDirError

FILES = ("config.yaml", "classes.json", "preprocessing.json", "model.safetensors", "metrics.json")
# A fine-tuning run's checkpoints live in <run>/checkpoints (train.state writes them). The name is spelled
# here too so that checking and writing a probe's run folder never imports the training code (and torch).
CHECKPOINT_DIR = "checkpoints"  # a fine-tuning run's checkpoints (see train/state.py), inside its run folder
LAST_CHECKPOINT = "last.safetensors"
PICKLED_CHECKPOINT = "last.pt"  # transferkit 0.1's pickled checkpoints: never loaded, since they could run code


def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / CHECKPOINT_DIR


@dataclass
class RunFiles:
    config: RunConfig
    classes: list[str]
    preprocessing: dict[str, Any]  # as the modality wrote it (images: Preprocessing.to_dict())
    model_meta: dict[str, str]
    metrics: dict[str, Any]
    path: Path

    @property
    def model_path(self) -> Path:
        return self.path / "model.safetensors"


def check_writable(path: str | Path, overwrite: bool, ignore: tuple[str, ...] = ()) -> None:
    """Fail before any work is done if ``path`` holds something and ``overwrite`` is not set.

    Entries named in ``ignore`` (a fine-tuning run's ``checkpoints``) do not count.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path}: exists and is not a folder; choose another --out")
    if path.is_dir() and not overwrite:
        entries = [p.name for p in path.iterdir() if p.name not in ignore]
        if entries == [CHECKPOINT_DIR]:
            raise RunDirError(f"{path}: holds an unfinished training run; pass --resume to continue it, "
                              "--overwrite to start again, or choose another --out")
        if entries:
            raise RunDirError(f"{path}: already holds a run; pass --overwrite to replace it, or choose another --out")


def write_run(path: str | Path, *, config: RunConfig, classes: list[str], preprocessing: dict[str, Any],
              tensors: dict[str, np.ndarray], model_meta: dict[str, str], metrics: dict[str, Any],
              overwrite: bool = False, keep: tuple[str, ...] = (), extra_files: dict[str, bytes] | None = None,
              add_files: Callable[[Path], None] | None = None) -> Path:
    """Write the run atomically; entries named in ``keep`` move over from the existing folder (checkpoints).

    ``add_files(staging_folder)`` writes anything else the run needs (a text run's tokenizer) before the
    folder is renamed into place.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    check_writable(path, overwrite, ignore=keep)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    staging.mkdir()
    try:
        config.to_yaml(staging / "config.yaml")
        (staging / "classes.json").write_text(json.dumps(classes, indent=1))
        (staging / "preprocessing.json").write_text(json.dumps(preprocessing, indent=1))
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(staging / "model.safetensors"),
                  metadata={k: str(v) for k, v in model_meta.items()})
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=1))
        for name, data in (extra_files or {}).items():
            (staging / name).write_bytes(data)
        if add_files is not None:
            add_files(staging)
        for name in keep:
            if (path / name).exists():
                os.replace(path / name, staging / name)
        if path.exists():
            old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(path, old)
            os.replace(staging, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, path)
    finally:
        for name in keep:  # a failed save must not take the checkpoints with it
            if (staging / name).exists() and path.is_dir() and not (path / name).exists():
                os.replace(staging / name, path / name)
        shutil.rmtree(staging, ignore_errors=True)
    return path


def read_run(path: str | Path, required: tuple[str, ...] = ()) -> RunFiles:
    """The common files of a run folder; ``required`` names what else must be there (a text run's tokenizer)."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: run folder not found; pass the --out folder of `transferkit train`")
    missing = [name for name in FILES if not (path / name).is_file()]
    missing += [name for name in required if not (path / name).exists()]
    if missing:
        raise RunDirError(f"{path}: not a complete run (missing {', '.join(missing)}); train again into it")
    try:
        return RunFiles(
            config=RunConfig.from_yaml(path / "config.yaml"),
            classes=json.loads((path / "classes.json").read_text()),
            preprocessing=json.loads((path / "preprocessing.json").read_text()),
            model_meta=read_model_meta(path / "model.safetensors"),
            metrics=json.loads((path / "metrics.json").read_text()),
            path=path,
        )
    except (ValueError, OSError) as exc:
        raise RunDirError(f"{path}: run files are damaged ({str(exc).splitlines()[0][:120]})") from None


def read_model_meta(model: str | Path) -> dict[str, str]:
    """The metadata of a ``model.safetensors`` (format, backbone, fingerprint, ...), without torch."""
    from safetensors import safe_open

    with safe_open(str(model), framework="numpy") as handle:
        return dict(handle.metadata() or {})


def run_format(path: str | Path) -> str:
    """The ``format`` a run folder's model was saved in ("" when there is no readable model)."""
    try:
        return read_model_meta(Path(path) / "model.safetensors").get("format", "")
    except Exception:  # noqa: BLE001 - missing, truncated or not safetensors: no format
        return ""


def read_tensors(path: str | Path, prefix: str = "") -> dict[str, np.ndarray]:
    """Tensors whose name starts with ``prefix`` (prefix removed), without importing torch."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        return {k[len(prefix):]: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefix)}


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
