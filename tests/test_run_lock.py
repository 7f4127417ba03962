"""One process at a time writes a run folder (runs/lock.py): a second is refused naming the holder, a lock a
killed process left never blocks, and the lock leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_folder

from transferkit.errors import RunDirError
from transferkit.runs import lock
from transferkit.runs.folders import is_seeds_folder, is_temporary
from transferkit.runs.lock import hold_run_folder, lock_file

HOLD = """
import sys
from transferkit.runs.lock import hold_run_folder
with hold_run_folder(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path: Path):
    """Start a process that holds the lock of a folder until it is told to end (or killed)."""
    started = []

    def start(folder: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env)
        started.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_second_process_is_refused_naming_the_holder_until_it_ends(tmp_path: Path, holder) -> None:
    run = tmp_path / "run"
    first = holder(run)
    with pytest.raises(RunDirError, match=rf"run: another run is writing this folder \(process {first.pid}, "
                                          r"started \d{4}-\d\d-\d\d [\d:]{8}: .*\); wait for it to end"):
        with hold_run_folder(run):
            pass
    first.stdin.close()  # it ends normally: the lock file goes with it
    first.wait(timeout=30)
    assert not lock_file(run).exists()
    with hold_run_folder(run):
        assert json.loads(lock_file(run).read_text())["pid"] == os.getpid()


def test_the_lock_file_of_a_killed_process_does_not_block(tmp_path: Path, holder) -> None:
    run = tmp_path / "run"
    first = holder(run)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert lock_file(run).exists()  # left behind, but the kernel released the lock with the process
    with hold_run_folder(run):
        assert json.loads(lock_file(run).read_text())["pid"] == os.getpid()
    assert not lock_file(run).exists()


def test_the_cli_refuses_a_second_run_before_any_work(tmp_path: Path, holder) -> None:
    data = make_folder(tmp_path / "data", {"": 2})
    first = holder(tmp_path / "run")
    proc = subprocess.run([sys.executable, "-m", "transferkit", "train", str(data), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "300"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"another run is writing this folder (process {first.pid}" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_the_lock_is_reentrant_within_a_process_and_leaves_nothing(tmp_path: Path) -> None:
    run = tmp_path / "new" / "deeper" / "run"
    with hold_run_folder(run):
        with hold_run_folder(run):  # the CLI holds it; fit and save take it again
            assert lock_file(run).exists()
        assert lock_file(run).exists()
    assert not (tmp_path / "new").exists()  # the folders made for the lock file went with it
    with hold_run_folder(run):
        run.mkdir()
    assert run.is_dir() and not lock_file(run).exists()


def test_a_failed_command_leaves_no_folder_behind(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        with hold_run_folder(tmp_path / "new" / "run"):
            raise ValueError("a check failed")
    assert not (tmp_path / "new").exists()


def test_other_ranks_of_a_launch_leave_the_lock_to_rank_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with hold_run_folder(tmp_path / "run"):
        assert not lock_file(tmp_path / "run").exists()
    monkeypatch.setenv("WORLD_SIZE", "1")  # a scheduler's RANK outside a launch: this process locks
    with hold_run_folder(tmp_path / "run"):
        assert lock_file(tmp_path / "run").exists()


def test_a_stale_lock_in_a_seeds_folder_is_not_a_foreign_entry(tmp_path: Path) -> None:
    assert is_temporary(".seed-0.lock") and not is_temporary("seed-0.lock")
    seeds = tmp_path / "seeds"
    (seeds / "seed-0").mkdir(parents=True)
    (seeds / "seed-0" / "config.yaml").write_text("backbone: b\nstrategy: linear-probe\n")
    (seeds / ".seed-0.lock").write_text("{}")
    assert is_seeds_folder(seeds)


def test_the_holder_is_described_in_one_line() -> None:
    text = lock.describe({"pid": 7, "host": "other-host", "started": 0.5e9, "command": "train\n--out x" + "y" * 300})
    assert "\n" not in text and text.startswith("process 7 on other-host, started 1985-") and text.endswith("...")
    assert lock.describe({}) == "another process" and lock.describe({"pid": "7", "started": "x"}) == "another process"
