"""``--callback deadline:at=UNIX_SECONDS``: a trial stops after the epoch that leaves too little time for another
(``auto`` adds it to each fine-tuning trial, so the budget holds even when a step cost more than measured). Like
every callback it only reads the clock and asks the loop to stop."""

from __future__ import annotations

import time

from transferkit.train.callbacks import Callback, Context


class Deadline(Callback):
    def __init__(self, at: float) -> None:
        self.at = float(at)
        self.started = time.time()

    def epoch_start(self, context: Context) -> None:
        self.started = time.time()

    def epoch_end(self, context: Context) -> None:
        now = time.time()
        if now + (now - self.started) > self.at:  # the next epoch, as long as this one, would end past the deadline
            context.request_stop(f"time budget: {max(0.0, self.at - now):.0f} s left, less than an epoch")
