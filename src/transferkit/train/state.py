"""Training checkpoints: everything a resumed run needs to continue exactly where the last epoch ended.

``<out>/checkpoints/`` holds, during and after training:

    last.pt        model, optimiser, scheduler, grad scaler, RNG states, completed epochs, strategy phase
                   (and which parameters train in it), best metric, early-stopping counter, history
    best.pt        the model weights of the best epoch on the chosen validation metric
    config.yaml    the run's config (``transferkit train --config <out>/checkpoints/config.yaml --resume``)
    metrics.jsonl  one JSON object per finished epoch

Every file is written to a temporary name and renamed (``os.replace``), so a kill at any moment leaves the
previous complete checkpoint in place.
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.errors import CheckpointError

FORMAT = "transferkit-checkpoint-1"
CHECKPOINT_DIR = "checkpoints"
# Config fields that may differ between the interrupted and the resumed run (they do not change results).
RESUME_FREE_FIELDS = ("data", "cache", "cache_dir", "workers", "engine", "strict")




def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / CHECKPOINT_DIR


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from; train without --resume first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written by save()
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: checkpoint is damaged ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("format") not in (FORMAT, FORMAT + "-best"):
        raise CheckpointError(f"{path}: not a transferkit checkpoint")
    return state


def rng_state() -> dict[str, Any]:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
