"""Fault injection for the kill/resume tests: a callback that SIGKILLs or SIGINTs its own process at a given
batch, registered from here (production code has no such hook). Run as a script, it is the ``transferkit``
command line with the callback registered: ``python tests/faults.py train ... --callback fault:at=3:2``."""

from __future__ import annotations

import os
import signal
import sys

from transferkit.plugins import CALLBACKS
from transferkit.train.callbacks import Callback


class FaultInjection(Callback):
    """Sends this process SIGKILL (``action=kill``) or SIGINT (``action=interrupt``) before batch STEP of
    epoch EPOCH (1-based: ``at="2:3"``)."""

    def __init__(self, at: str, action: str = "kill") -> None:
        self.at, self.signal = at, signal.SIGKILL if action == "kill" else signal.SIGINT

    def batch_start(self, context) -> None:
        if f"{context.epoch + 1}:{context.step + 1}" == self.at:
            os.kill(os.getpid(), self.signal)


def command(*args: str) -> list[str]:
    """The argv that runs the CLI with the fault callback registered."""
    return [sys.executable, os.path.abspath(__file__), *args]


if __name__ == "__main__":
    from transferkit.cli import main

    CALLBACKS.register("fault", FaultInjection, replace=True)
    sys.argv = ["transferkit", *sys.argv[1:]]
    main()
