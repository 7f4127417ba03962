"""What the tuning modules share without importing optuna: their error, the check that optuna (an optional
extra) is installed, and the names of what a trial records besides its value."""

from __future__ import annotations

from importlib.util import find_spec

from transferkit.bounds import Int
from transferkit.errors import TransferkitError
from transferkit.registry import Registry, plugin

TRIALS = Int(1, 100_000)  # finished trials a study holds

INSTALL_HINT = "pip install 'transferkit[tune]'"
PRUNED_ATTR = "pruned_at_epoch"  # set by the prune callback on the trial it stopped
LOG_LOSS_ATTR = "val_log_loss"  # breaks ties between trials of equal validation accuracy
# Optuna's pruners by name, declared without importing optuna (--help and the option's check read the names here)
PRUNERS = Registry("pruner", {
    "median": plugin("transferkit.tuning.storage:median_pruner"),
    "none": plugin("optuna.pruners:NopPruner"),
})


class TuningError(TransferkitError):
    """A search that cannot start or go on as asked: its storage, its study, its trials."""


def require_optuna() -> None:
    """Fail with one line when optuna is not installed (checked without importing it: ~0.5 s of start-up)."""
    if find_spec("optuna") is None:
        raise TuningError(f"transferkit tune needs optuna, which is not installed; run {INSTALL_HINT}")
