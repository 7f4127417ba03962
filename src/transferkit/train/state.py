"""Training state and checkpoints: everything a resumed run needs to continue exactly where it stopped.

``<out>/checkpoints/`` holds, during and after training:

    last.safetensors   model, optimiser, scheduler, grad scaler, RNG states, loss terms' modules and state,
                       completed epochs (and steps of an interrupted one), phase, best metric, history
    best.safetensors   the model weights of the best epoch on the chosen validation metric
    config.yaml        the run's config (``transferkit train --config <out>/checkpoints/config.yaml --resume``)
    metrics.jsonl      one JSON object per finished epoch

A checkpoint is one safetensors file: the tensors, plus every other value as JSON in its metadata. Loading
it runs no code (no pickle), so a planted checkpoint cannot execute anything. Files are written to a
temporary name and renamed, so a kill at any moment leaves the previous complete checkpoint in place.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.atomic import atomic_write
from transferkit.errors import CheckpointError
from transferkit.runs.schema import Check, check_object, number, one_of, optional, text
from transferkit.runs.rundir import CHECKPOINT_DIR, LAST_CHECKPOINT as LAST, PICKLED_CHECKPOINT as PICKLED_V1, checkpoint_dir

__all__ = ["CHECKPOINT_DIR", "LAST", "BEST", "checkpoint_dir", "TrainState", "save", "load"]

FORMAT = "transferkit-checkpoint-2"
BEST = "best.safetensors"
# Config fields that may differ between the interrupted and the resumed run (they do not change results).
RESUME_FREE_FIELDS = ("data", "cache", "cache_dir", "workers", "engine", "strict", "callbacks", "grad_checkpointing")


@dataclass
class TrainState:
    """Where training stands; the loop updates it, callbacks read it, checkpoints store it."""

    epoch: int = 0  # completed epochs
    step: int = 0  # batches trained in the next, interrupted epoch (Ctrl-C)
    partial: dict[str, float] = field(default_factory=dict)  # that epoch's running sums
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped: bool = False  # early stop

    def observe(self, value: float, epoch: int, lower_is_better: bool) -> bool:
        """Count ``value`` (the epoch's validation metric) against the best so far; True if it is the new best."""
        better = self.best is None or (value < self.best if lower_is_better else value > self.best)
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return better

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------------
# Nested values <-> (JSON tree, flat tensors)
# ----------------------------------------------------------------------------------------------------------
def flatten(value: Any, tensors: dict[str, torch.Tensor], path: str = "t") -> Any:
    """A JSON-able tree for ``value``; tensors and arrays go into ``tensors`` under their path."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().clone().contiguous()  # clone: safetensors refuses shared storage
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        # as int64/float64: torch has no full support for every numpy dtype (numpy's RNG key is uint32)
        wide = value.astype(np.float64 if value.dtype.kind == "f" else np.int64)
        tensors[path] = torch.from_numpy(np.ascontiguousarray(wide))
        return {"__ndarray__": path, "dtype": str(value.dtype)}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: flatten(v, tensors, f"{path}.{k}") for k, v in value.items()}
        return {"__items__": [[k, flatten(v, tensors, f"{path}.{i}")] for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, tuple):
        return {"__tuple__": [flatten(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [flatten(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise CheckpointError(f"cannot store a {type(value).__name__} in a checkpoint (tensors, numbers, strings only)")


def unflatten(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__ndarray__" in tree:
            return tensors[tree["__ndarray__"]].numpy().astype(tree["dtype"])
        if "__items__" in tree:
            return {k: unflatten(v, tensors) for k, v in tree["__items__"]}
        if "__tuple__" in tree:
            return tuple(unflatten(v, tensors) for v in tree["__tuple__"])
        return {k: unflatten(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unflatten(v, tensors) for v in tree]
    return tree


def save(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` (nested dicts/lists/tuples of tensors, arrays and JSON values) atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = flatten(payload, tensors)
    try:
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": FORMAT, "tree": json.dumps(tree)}))
    except OSError as exc:  # a full or read-only disk: say where, not a traceback
        raise CheckpointError(f"{path.parent}: cannot write the checkpoint ({exc.strerror or exc}); free space or "
                              "choose another --out") from None


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`; nothing in the file is executed."""
    from safetensors import safe_open

    if not path.is_file():
        if (path.parent / PICKLED_V1).is_file():
            raise CheckpointError(f"{path.parent / PICKLED_V1}: a checkpoint of an older transferkit (a pickle, which "
                                  "is never loaded: it could run code); train again with --overwrite")
        raise CheckpointError(f"{path}: no checkpoint to resume from; train without --resume first")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a transferkit checkpoint")
        state = unflatten(json.loads(meta["tree"]), tensors)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to parse means a damaged or foreign file
        raise CheckpointError(f"{path}: checkpoint is damaged ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a transferkit checkpoint")
    return state


def check_checkpoint(path: Path, saved: dict[str, Any]) -> dict[str, Any]:
    """The values a resumed run reads from the last checkpoint, each of its type and within bounds (the file may
    have been edited)."""
    objects = ("config", "state", "model", "optimizer", "scheduler", "rng", "terms")
    schema: dict[str, Check] = {key: is_object for key in objects}
    check_object(path, saved, {**schema, "phase": number(0, 1000, integer=True), "phase_name": text(100)},
                 extra=True)
    counts = number(0, 1e9, integer=True)
    check_object(path, saved["state"], {
        "epoch": counts, "step": counts, "bad_epochs": counts, "best": optional(number(-1e30, 1e30)),
        "best_epoch": optional(counts), "stopped": one_of(True, False), "partial": is_object,
        "history": lambda v: None if isinstance(v, list) and all(isinstance(r, dict) for r in v) else "a list of objects",
    })
    return saved


def is_object(value: Any) -> str | None:
    return None if isinstance(value, dict) else "an object"


# ----------------------------------------------------------------------------------------------------------
# RNGs and resume checks
# ----------------------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def check_resumable(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """The resumed run must be the interrupted one: every result-changing config field must match."""
    for key in sorted(set(saved) | set(current)):
        if key in RESUME_FREE_FIELDS:
            continue
        if saved.get(key) != current.get(key):
            raise CheckpointError(
                f"{path}: cannot resume, config field '{key}' was {saved.get(key)!r} and is now "
                f"{current.get(key)!r}; resume with the saved config or train into a new --out"
            )
