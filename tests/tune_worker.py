"""``transferkit tune`` as a worker process of the tests of several workers, with two test-only controls in
the environment: TK_TEST_BARRIER=DIR:N holds each worker's first trial until N workers have started one (so the
workers overlap however slowly each starts), and TK_TEST_HANG=FILE makes the first trial write FILE and hang
(a worker to kill mid-trial). TK_TEST_HEARTBEAT=S sets the heartbeat to S seconds and the grace period to 2 S."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from transferkit.cli import main
from transferkit.tuning import objective, storage

TRIAL_SECONDS = 0.2  # a probe trial on a tiny folder takes milliseconds: long enough to interleave the workers


def wrapped(call):
    started: list[bool] = []

    def trial(self, t):
        if not started:
            started.append(True)
            barrier, hang = os.environ.get("TK_TEST_BARRIER"), os.environ.get("TK_TEST_HANG")
            if barrier:
                folder, count = barrier.rsplit(":", 1)
                (Path(folder) / f"ready-{os.getpid()}").touch()
                deadline = time.monotonic() + 120
                while len(list(Path(folder).glob("ready-*"))) < int(count) and time.monotonic() < deadline:
                    time.sleep(0.05)
            if hang:
                Path(hang).write_text(str(t.number))
                time.sleep(3600)
        time.sleep(TRIAL_SECONDS)
        return call(self, t)

    return trial


if os.environ.get("TK_TEST_HEARTBEAT"):
    storage.HEARTBEAT_SECONDS = int(os.environ["TK_TEST_HEARTBEAT"])
    storage.GRACE_SECONDS = 2 * storage.HEARTBEAT_SECONDS
objective.ProbeObjective.__call__ = wrapped(objective.ProbeObjective.__call__)
sys.argv = ["transferkit", *sys.argv[1:]]
main()
