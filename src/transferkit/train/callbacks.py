"""Callbacks: code that reacts to the training loop's events without being part of it.

Events, in the order the loop fires them::

    fit_start  epoch_start  (batch_start  after_loss  before_step  batch_end)*  epoch_end  save  ...  fit_end

A callback reads the :class:`Context` and may only do three things to the run: raise an error, ask the loop
to stop (``context.request_stop(reason)``), or write files. It never changes the model, the optimiser or
another callback's state, so callbacks do not depend on each other's order (fastai's mutate-the-learner
callbacks do). The loop updates the :class:`~transferkit.train.state.TrainState` (history, best epoch) *before*
``epoch_end``; stop requests made at ``epoch_end`` are applied before ``save``, so a checkpoint always
records them.

Built in: :class:`Checkpointer`, :class:`EarlyStopping`, :class:`SignalStop` (Ctrl-C), :class:`MetricsLogger`,
:class:`NonFiniteLoss`. Others come by name from ``config.callbacks`` through
:data:`~transferkit.plugins.CALLBACKS`.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from transferkit.atomic import atomic_write_bytes
from transferkit.config import RunConfig
from transferkit.errors import TrainingError, arg
from transferkit.progress import log
from transferkit.train import state as ckpt
from transferkit.train.state import TrainState

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch import nn

    from transferkit.strategies import Phase

# the stop reason of Ctrl-C, which pauses a run (checkpoint, resume later); any other reason ends it after the
# epoch (early stop, a pruned tuning trial), the best epoch restored
SIGNAL = "signal"
EVENTS = ("fit_start", "epoch_start", "batch_start", "after_loss", "before_step", "batch_end", "epoch_end", "save",
          "fit_end")


@dataclass
class Context:
    """What callbacks see. The loop fills it in as it goes; callbacks treat it as read-only."""

    config: RunConfig
    directory: Path  # <out>/checkpoints
    accelerator: "Accelerator"
    model: "nn.Module"  # unwrapped
    state: TrainState
    epochs: int
    phase: "Phase | None" = None
    epoch: int = 0  # 0-based, the epoch running (or just finished)
    step: int = 0  # 0-based, the batch running (or just finished)
    steps_in_epoch: int = 0
    loss: torch.Tensor | None = None  # the batch's total loss, from after_loss on
    record: dict[str, Any] = field(default_factory=dict)  # the finished epoch's metrics, at epoch_end
    is_best: bool = False  # the finished epoch is the best so far
    snapshot: Any = None  # () -> the checkpoint payload (model, optimiser, RNG, terms, state)
    stop_reason: str | None = None
    resumable: bool = True  # False: the checkpoints are in a temporary folder (fit without out)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason


class Callback:
    """No-op handlers for every event; subclasses override the ones they need."""

    def fit_start(self, context: Context) -> None: ...
    def epoch_start(self, context: Context) -> None: ...
    def batch_start(self, context: Context) -> None: ...
    def after_loss(self, context: Context) -> None: ...
    def before_step(self, context: Context) -> None: ...
    def batch_end(self, context: Context) -> None: ...
    def epoch_end(self, context: Context) -> None: ...
    def save(self, context: Context) -> None: ...
    def fit_end(self, context: Context) -> None: ...


class Callbacks:
    """Fires an event on every callback, in list order (which, by the rules above, does not matter)."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = list(callbacks)

    def fire(self, event: str, context: Context) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(context)


class Checkpointer(Callback):
    """``best.safetensors`` when the epoch is the best, ``last.safetensors`` and ``metrics.jsonl`` every time."""

    def fit_start(self, context: Context) -> None:
        if context.is_main and context.state.epoch == 0 and context.state.step == 0:
            context.config.to_yaml(context.directory / "config.yaml")

    def save(self, context: Context) -> None:
        if not context.is_main:
            return
        if context.is_best and context.state.step == 0:
            ckpt.save({"epoch": context.epoch + 1, "model": context.model.state_dict()}, context.directory / ckpt.BEST)
        ckpt.save(context.snapshot(), context.directory / ckpt.LAST)
        lines = "".join(json.dumps(record) + "\n" for record in context.state.history)
        atomic_write_bytes(context.directory / "metrics.jsonl", lines.encode())


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without a better validation metric (0: never)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def epoch_end(self, context: Context) -> None:
        if self.patience and context.state.bad_epochs >= self.patience:
            context.request_stop(f"early stop: no better {context.config.metric} for {self.patience} epoch(s)")


class SignalStop(Callback):
    """Ctrl-C (SIGINT) asks the loop to stop at the next step boundary, where the optimiser state is whole and
    a checkpoint can be written; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Any = None

    def fit_start(self, context: Context) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log("stopping after this step to save a checkpoint (Ctrl-C again to stop at once)")

    def batch_end(self, context: Context) -> None:
        if self.requested:
            context.request_stop(SIGNAL)

    epoch_end = batch_end

    def fit_end(self, context: Context) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


class MetricsLogger(Callback):
    """One line per epoch: train loss (and each loss term), time, LR, validation metrics."""

    def epoch_end(self, context: Context) -> None:
        if not context.is_main:
            return
        shown = {k: v for k, v in context.record.items() if k not in ("epoch", "phase")}
        log(f"epoch {context.epoch + 1}/{context.epochs} ({context.phase.name}): "
            + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))


class NonFiniteLoss(Callback):
    """A NaN or infinite loss stops training with the epoch and step, and leaves the run folder in a state its
    message describes: a resumed run would repeat the same steps (its RNG is restored), so the message never
    offers ``--resume``; a folder holding a good checkpoint is replaced by ``--overwrite``, and one without
    (the loss diverged in the first epoch) is cleared of the checkpoint folder it started, so a re-run needs
    nothing more."""

    def after_loss(self, context: Context) -> None:
        finite = torch.isfinite(context.loss.detach()).float()
        if context.accelerator.num_processes > 1:
            finite = context.accelerator.reduce(finite, "min")
        if bool(finite):
            return
        where = (f"loss became {context.loss.item()} at epoch {context.epoch + 1}, step {context.step + 1} (phase "
                 f"'{context.phase.name}'): training diverged")
        retry = f"train again with a lower {arg('lr')} or with {arg('grad_clip')}"
        if not context.resumable:
            raise TrainingError(f"{where}; {retry}")
        out = context.directory.parent
        if (context.directory / ckpt.LAST).is_file():
            state = context.state
            epoch = state.history[-1]["epoch"] if state.history else state.epoch
            raise TrainingError(f"{where}; {out} keeps the last good checkpoint (epoch {epoch}), but "
                                f"{arg('resume', True)} would repeat the same steps: {retry}, and "
                                f"{arg('overwrite', True)} to replace it")
        if context.is_main:  # nothing trained was saved: the folder goes back to what it held before
            shutil.rmtree(context.directory, ignore_errors=True)
        raise TrainingError(f"{where} before its first checkpoint, so nothing was kept in {out}; {retry}")


def default_callbacks(config: RunConfig) -> list[Callback]:
    return [NonFiniteLoss(), SignalStop(), EarlyStopping(config.early_stop), MetricsLogger(), Checkpointer()]
