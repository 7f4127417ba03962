"""``--callback tensorboard[:dir=FOLDER]``: each epoch's scalars as TensorBoard events, for people who watch a
run live (``tensorboard --logdir FOLDER``).

Written at ``epoch_end`` from the epoch's record (the same numbers as ``metrics.jsonl``): ``train/loss`` and
each loss term (``train/loss_<term>``), ``val/accuracy``, ``val/macro_f1``, ``val/loss``, ``lr`` and the
epoch's seconds, at step = epoch. The folder defaults to ``<out>-tensorboard`` beside the run folder: a run
folder holds only what a run writes, so that it can be replaced. Only the main process writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferkit.errors import TransferkitError
from transferkit.progress import log
from transferkit.train.callbacks import Callback, Context

PREFIXES = (("val_", "val/"), ("train_", "train/"), ("loss_", "train/loss_"))


def tag(key: str) -> str:
    """A record's key as a TensorBoard tag: ``val_accuracy`` -> ``val/accuracy``, ``loss_ce`` ->
    ``train/loss_ce``; others (``lr``, ``seconds``) keep their name."""
    for prefix, group in PREFIXES:
        if key.startswith(prefix):
            return group + key[len(prefix):]
    return key


class TensorBoardLogger(Callback):
    def __init__(self, dir: str | None = None) -> None:  # noqa: A002 - the option's name on the command line
        self.folder = Path(dir).expanduser() if dir else None
        self.writer: Any = None
        try:
            from torch.utils.tensorboard import (
                SummaryWriter,  # the tensorboard package, only when asked for
            )
        except ImportError:
            raise TransferkitError("callback 'tensorboard' needs the tensorboard package; run `pip install "
                                   "tensorboard`") from None
        self.summary_writer = SummaryWriter

    def fit_start(self, context: Context) -> None:
        if not context.is_main:
            return
        run = context.directory.parent
        folder = self.folder or run.with_name(f"{run.name}-tensorboard")
        self.writer = self.summary_writer(log_dir=str(folder))
        log(f"tensorboard: scalars per epoch in {folder} (tensorboard --logdir {folder})")

    def epoch_end(self, context: Context) -> None:
        if self.writer is None:
            return
        for key, value in context.record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag(key), float(value), context.epoch + 1)
        self.writer.flush()

    def fit_end(self, context: Context) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
