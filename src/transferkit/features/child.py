"""One-off work that peaks in memory, run in a child process: the ONNX export (torch, timm and the exporter: 1.2-1.4
GB for Lite0 @224) and the int8 quantisation (the calibration graph keeps every activation). The run that pays
them then keeps only what extraction needs: that memory is returned when the child ends.

The child is forked (Linux), so it inherits the closures that build a network, which could not be pickled for a
spawned one; it reports back through a pipe (a result or the exception, never a log line: those are the
parent's). Where fork is not the platform's way (macOS, Windows), the work runs in this process, as before; so
it does while other Python threads run (a study's heartbeat, a server, a prefetching pool): a lock one of them
held at the fork stays locked in the child for ever (seen: an export child of `auto` hung on one).
"""

from __future__ import annotations

import gc
import os
import pickle
import sys
import threading
from typing import Callable, TypeVar

from transferkit.errors import first_line

T = TypeVar("T")


class ChildError(RuntimeError):
    """The child ended without a result (killed, out of memory): its work was not done."""


def in_child(work: Callable[[], T]) -> T:
    """``work()``'s result, computed in a forked child; its exception is raised here (by its type and message
    when it cannot be sent whole)."""
    if not sys.platform.startswith("linux") or threading.active_count() > 1:
        return work()
    read, write = os.pipe()
    # The parent's garbage is freed here, and the child's collector never sees the parent's objects: an ONNX
    # Runtime session finalised in the child waits for ever on its thread pool, which a fork does not copy (seen:
    # auto's export child, after training, hung in pthread_cond_destroy collecting the ranking's sessions)
    gc.collect()
    gc.freeze()
    try:
        pid = os.fork()
    except OSError:
        gc.unfreeze()
        raise
    if pid == 0:  # pragma: no cover - the child: coverage does not follow it
        code = 1
        try:
            os.close(read)
            code = child(work, write)
        finally:
            os._exit(code)  # never back into the parent's code, whatever happened
    gc.unfreeze()
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()
    except BaseException:  # interrupted: the child's work is not wanted any more
        os.kill(pid, 9)
        raise
    finally:
        _, status = os.waitpid(pid, 0)
    if not data:
        raise ChildError(f"its process ended without a result ({describe(status)})")
    ok, value = pickle.loads(data)  # our own child's answer
    if ok:
        return value
    raise value


def child(work: Callable[[], T], write: int) -> int:  # pragma: no cover - runs in the child
    if "torch" in sys.modules:  # the parent ran torch: its OpenMP pool did not survive the fork, so no threads
        sys.modules["torch"].set_num_threads(1)
    try:
        answer = (True, work())
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent, which words it
        answer = (False, exc)
    try:
        data = pickle.dumps(answer)
    except Exception:  # noqa: BLE001 - an exception that does not pickle goes back as its type and first line
        data = pickle.dumps((False, RuntimeError(f"{type(answer[1]).__name__}: {first_line(answer[1])}")))
    with os.fdopen(write, "wb") as pipe:
        pipe.write(data)
    return 0


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        signal = os.WTERMSIG(status)
        return f"signal {signal}{', most likely out of memory' if signal == 9 else ''}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
