"""One process at a time writes a run folder: two ``train --out runs/x`` at once would interleave their
checkpoints, ``metrics.jsonl`` and configs, and both say "saved".

The lock is an OS advisory lock (``flock``) on ``.<name>.lock`` beside the run folder (beside, because the
folder itself is replaced by a rename when the run is saved), held from before the run's work until it is
saved. The kernel releases it when the holding process ends in any way, SIGKILL included, so a lock file left
by a killed run never blocks the next one; the file only records who holds it (pid, host, start, command), for
the message that refuses a second run. Within a process the lock is re-entrant (the CLI holds it for the
command, ``fit`` and ``save`` take it again). In a multi-process run (``accelerate launch``, torchrun) rank 0
holds it for all ranks. This module is torch- and numpy-free: the CLI takes the lock before the heavy imports.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from transferkit.atomic import reason, write_problem
from transferkit.errors import RunDirError
from transferkit.features.ranks import launch_size
from transferkit.runs.folders import LOCK_SUFFIX, another_out

MAX_RECORD = 4096  # the holder's record is a few hundred bytes
COMMAND_CHARS = 100  # of the holder's command line, shown in the message
HELD: dict[Path, "Held"] = {}  # lock file -> the lock this process holds on it
GUARD = threading.Lock()


def lock_file(out: str | Path) -> Path:
    """``runs/.x.lock`` for the run folder ``runs/x`` (absolute: ``runs/x/..`` has no name of its own)."""
    target = Path(os.path.abspath(out))
    return target.with_name(f".{target.name}{LOCK_SUFFIX}")


def is_other_rank() -> bool:
    """A process of a multi-process launch other than rank 0 (whose lock covers the launch)."""
    return launch_size()[0] != 0  # the one reading of WORLD_SIZE and RANK that extraction splits by


@contextmanager
def hold_run_folder(out: str | Path) -> Iterator[None]:
    """Hold ``out``'s lock for the ``with`` block; a run folder another process holds is a :class:`RunDirError`
    naming that process. Folders made for the lock file (``runs/`` of a new ``runs/x``) go again with the lock
    if nothing was written in them, so a command that fails its checks leaves nothing behind."""
    if is_other_rank() or not Path(os.path.abspath(out)).name:  # the root folder: refused by the run's checks
        yield
        return
    path = lock_file(out)
    with GUARD:
        if path in HELD:
            HELD[path].depth += 1
        else:
            HELD[path] = acquire(path, out)
    try:
        yield
    finally:
        with GUARD:
            held = HELD[path]
            held.depth -= 1
            if not held.depth:
                del HELD[path]
                release(path, held)


@dataclass
class Held:
    fd: int
    made: list[Path]  # folders created for the lock file, deepest first
    depth: int = 1


def acquire(path: Path, out: str | Path) -> Held:
    """The lock, its file holding this process's record."""
    made = [folder for folder in path.parents if not folder.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = read_holder(fd)
                os.close(fd)
                raise RunDirError(f"{out}: another run is writing this folder ({describe(holder)}); wait for it to "
                                  f"end, or choose {another_out()}") from None
            except BaseException:
                os.close(fd)
                raise
            if same_file(fd, path):  # not a file a finishing holder unlinked while we waited to lock it
                break
            os.close(fd)
        try:
            write_record(fd)
        except BaseException:
            os.close(fd)  # else the flock stays held by this process and its next run refuses itself
            raise
        return Held(fd, made)
    except OSError as exc:
        remove_empty(made)
        problem = write_problem(path.parent) or f"{reason(exc)} in {path.parent}"
        raise RunDirError(f"{out}: cannot write the run there ({problem}); choose {another_out()}") from None
    except BaseException:
        remove_empty(made)
        raise


def release(path: Path, held: Held) -> None:
    """Remove the lock file, then unlock: a process waiting on the old file sees it is gone and opens anew."""
    try:
        if same_file(held.fd, path):
            path.unlink()
    except OSError:
        pass  # a lock file left behind is harmless: the lock goes with the descriptor
    finally:
        os.close(held.fd)
    remove_empty(held.made)


def remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # the run, or anything else, is in it now
            return


def same_file(fd: int, path: Path) -> bool:
    try:
        mine, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def write_record(fd: int) -> None:
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    if argv[0] in ("__main__.py", "-m", "-c"):  # python -m transferkit: named as the console script
        argv[0] = "transferkit"
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "command": shlex.join(argv)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)


def read_holder(fd: int) -> dict[str, Any]:
    """The holder's record ({} while it is still being written, or from a foreign file)."""
    try:
        record = json.loads(os.pread(fd, MAX_RECORD, 0))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def describe(holder: dict[str, Any]) -> str:
    """``process 1234, started 2026-05-01 10:02:11: transferkit train data --out runs/x`` (what is known)."""
    pid, host, started, command = (holder.get(k) for k in ("pid", "host", "started", "command"))
    words = f"process {pid}" if isinstance(pid, int) else "another process"
    if isinstance(host, str) and host != socket.gethostname():
        words += f" on {host[:64]}"
    if isinstance(started, (int, float)) and 0 < started < 1e11:
        words += f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
    if isinstance(command, str) and command:
        command = "".join(c if c.isprintable() else "?" for c in command)  # the message stays one line
        words += ": " + (command if len(command) <= COMMAND_CHARS else command[:COMMAND_CHARS - 3] + "...")
    return words
