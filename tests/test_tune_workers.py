"""Several ``transferkit tune`` workers on one study: on a real PostgreSQL (the ``postgres_url`` fixture), two
worker processes share ``--trials``, run no trial twice and fit the best once; a killed worker's trial is failed
after the grace period and its slot run by the other; the password is never printed. The slot and claim rules
themselves are checked on SQLite."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import make_folder, run_main

from transferkit.tuning import storage as tuning_storage
from transferkit.tuning.storage import open_storage
from transferkit.tuning.workers import SURPLUS_ATTR, Slotted, Surplus, claim_fit

SRC = Path(__file__).resolve().parents[1] / "src"
WORKER = Path(__file__).resolve().parent / "tune_worker.py"
SMALL = ("--image-size", "32", "--engine", "torch", "--workers", "0", "--batch-size", "8")


def worker(data: Path, url: str, study: str, trials: int, out: Path, cache: Path, **env: str) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                   "TRANSFERKIT_CACHE": str(cache), "CI": "1", **env}
    return subprocess.Popen([sys.executable, str(WORKER), "tune", str(data), "--storage", url, "--study", study,
                             "--trials", str(trials), "--out", str(out), *SMALL, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)


def password(url: str) -> str:
    return re.match(r"postgresql://[^:]+:([^@]+)@", url).group(1)


def test_two_workers_share_the_trials_and_fit_once(postgres_url: str, tmp_path: Path, isolated_cache: Path) -> None:
    data = make_folder(tmp_path / "data", {"train": 6, "val": 3})
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [worker(data, postgres_url, "shared", 8, tmp_path / f"w{i}", isolated_cache,
                    TK_TEST_BARRIER=f"{barrier}:2") for i in range(2)]
    results = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err
        assert password(postgres_url) not in out + err and "tk:***@" in out  # the summary's storage, masked
    stored = optuna.load_study(study_name="shared", storage=postgres_url).get_trials(deepcopy=False)
    finished = [t.number for t in stored if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 8
    assert all(t.user_attrs.get(SURPLUS_ATTR) for t in stored if t.number not in finished)  # none failed else
    ran = [{int(n) for n in re.findall(r"^trial (\d+): val accuracy", err, re.M)} for _, err in results]
    assert ran[0] and ran[1] and not ran[0] & ran[1] and ran[0] | ran[1] == set(finished)  # both ran, none twice
    summaries = [json.loads(out) for out, _ in results]
    fitted = [i for i in range(2) if (tmp_path / f"w{i}" / "metrics.json").is_file()]
    assert len(fitted) == 1  # one final fit; the other worker names it and leaves its --out unmade
    (winner,), loser = fitted, 1 - fitted[0]
    assert summaries[loser]["fitted_by"]["out"] == str(tmp_path / f"w{winner}") and not (tmp_path / f"w{loser}").exists()
    assert summaries[winner]["run"]["folder"] == str(tmp_path / f"w{winner}")
    assert summaries[0]["best"] == summaries[1]["best"] and summaries[winner]["finished"] == 8
    assert password(postgres_url) not in (tmp_path / f"w{winner}" / "metrics.json").read_text()


def test_a_killed_workers_trial_fails_and_its_slot_runs_elsewhere(postgres_url: str, tmp_path: Path,
                                                                   isolated_cache: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    data = make_folder(tmp_path / "data", {"train": 6, "val": 3})
    hung = tmp_path / "hung"
    doomed = worker(data, postgres_url, "killed", 2, tmp_path / "dead", isolated_cache, TK_TEST_HANG=str(hung),
                    TK_TEST_HEARTBEAT="1")
    deadline = time.monotonic() + 120
    while not hung.exists() and doomed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hung.exists(), doomed.communicate()[1]
    doomed.send_signal(signal.SIGKILL)  # mid-trial: no chance to tell the study anything
    doomed.wait()
    monkeypatch.setattr(tuning_storage, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(tuning_storage, "GRACE_SECONDS", 2)
    code, out, err = run_main(monkeypatch, capsys, "tune", str(data), "--storage", postgres_url, "--study", "killed",
                              "--trials", "2", "--out", str(tmp_path / "run"), *SMALL, "--json")
    assert code == 0, err
    dead = int(hung.read_text())
    assert f"trial {dead}: failed, its worker stopped (no heartbeat for 2 s)" in err
    states = {t.number: t.state.name for t in optuna.load_study(study_name="killed", storage=postgres_url).trials}
    assert states[dead] == "FAIL" and list(states.values()).count("COMPLETE") == 2, states
    assert json.loads(out)["finished"] == 2 and password(postgres_url) not in out + err


def test_a_server_url_without_its_driver_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    data = make_folder(tmp_path / "data", {"train": 2, "val": 1})
    url = "postgresql+pg8000://bob:hunter2secret@127.0.0.1:9/app"  # pg8000: a driver transferkit never installs
    code, out, err = run_main(monkeypatch, capsys, "tune", str(data), "--storage", url, "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1 and "hunter2secret" not in out + err, err
    assert "bob:***@" in err and "driver pg8000 is not installed" in err and "transferkit[scale]" in err


def test_a_trial_past_the_total_is_surplus_and_the_fit_is_claimed_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    storage = open_storage(url, heartbeat=False)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    held = study.ask()  # another worker's trial holds the study's one slot
    slotted = Slotted(lambda trial: trial.suggest_float("x", 0, 1), 1, 0)
    study.optimize(slotted, n_trials=3, catch=(Surplus,))
    assert slotted.ran == 0 and len(study.trials) == 2  # asked once, found surplus, stopped asking
    assert study.trials[1].state.name == "FAIL" and study.trials[1].user_attrs[SURPLUS_ATTR]
    study.tell(held, 0.5)
    # each trial number seeds its own proposal: workers starting together do not propose the same settings,
    # and a study proposes the same ones however many workers run it
    proposals = []
    for name in ("t", "u"):
        other = optuna.create_study(storage=storage, study_name=name, direction="maximize")
        other.optimize(Slotted(lambda trial: trial.suggest_float("y", 0, 1), 9, 7), n_trials=2)
        proposals.append([t.params["y"] for t in other.trials])
    assert proposals[0][0] != proposals[0][1] and proposals[0] == proposals[1]
    assert claim_fit(storage, study, 1, "a") is None  # the first claim wins; later ones read it
    assert claim_fit(open_storage(url, heartbeat=False), study, 1, "b")["out"] == "a"
    assert claim_fit(storage, study, 2, "b") is None  # a search to more trials claims anew
