"""``transferkit tune``: a probe search writes a normal run, a study resumes (and fails a killed process's trial),
the prune callback stops trials, the test split is never read by a trial, and bad input is one line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, get_type_hints

import optuna
import pytest
from conftest import make_folder, run_main

from transferkit.config import RunConfig
from transferkit.estimators import ImageClassifier, load_classifier
from transferkit.modalities import IMAGE
from transferkit.plugins import CALLBACKS
from transferkit.tuning import storage as tuning_storage
from transferkit.tuning import study as tuning_study
from transferkit.tuning.base import PRUNED_ATTR, PRUNERS
from transferkit.tuning.objective import trial_classifier
from transferkit.tuning.space import FINETUNE, PROBE
from transferkit.tuning.storage import open_storage, prune_spec

SMALL = ("--image-size", "32", "--engine", "torch", "--workers", "0", "--batch-size", "8")


def tune_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[dict[str, Any], str]:
    code, out, err = run_main(monkeypatch, capsys, "tune", *args, *SMALL, "--json")
    assert code == 0, err
    return json.loads(out), err


def stored_trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


@pytest.fixture
def always_prune() -> Iterator[str]:
    """A pruner that stops every trial at its first report (validation accuracy is never >= 2)."""
    PRUNERS.register("always", lambda: optuna.pruners.ThresholdPruner(lower=2.0))
    yield "always"
    PRUNERS.unregister("always")


def test_probe_tune_writes_a_run_that_predicts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    data = make_folder(tmp_path / "data", {"train": 6, "val": 3})
    url, out = f"sqlite:///{tmp_path}/study.db", tmp_path / "run"
    result, _ = tune_json(monkeypatch, capsys, str(data), "--trials", "3", "--storage", url, "--out", str(out))
    assert result["finished"] == 3 and [row["state"] for row in result["trials"]] == ["complete"] * 3
    assert all(set(row["params"]) == {"l2", "class_weights"} for row in result["trials"])
    best = result["best"]
    assert best["value"] == max(row["value"] for row in result["trials"]) and result["seconds_per_trial"] > 0
    clf = load_classifier(out)  # a normal run folder: its config carries the best settings
    assert clf.config.l2 == pytest.approx(best["params"]["l2"]) and clf.config.class_weights == best["params"]["class_weights"]
    assert clf.predict([str(data / "val" / "red" / "img_0.png"), str(data / "val" / "blue" / "img_0.png")]) == ["red", "blue"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tune"]["best"] == best and metrics["val"]["accuracy"] == pytest.approx(best["value"])
    code, text, err = run_main(monkeypatch, capsys, "evaluate", str(out), str(data / "val"))
    assert code == 0 and "accuracy" in text, err
    # the table names every trial and the best one's options; --out now holds a run: refused without --overwrite
    code, text, err = run_main(monkeypatch, capsys, "tune", str(data), "--trials", "3", "--storage", url, "--out",
                               str(out), *SMALL, "--overwrite")
    assert code == 0 and "best: trial" in text and "--l2" in text and "--class-weights" in text, err
    code, _, err = run_main(monkeypatch, capsys, "tune", str(data), "--trials", "3", "--storage", url, "--out", str(out))
    assert code == 2 and "already holds a run" in err and err.count("\n") == 1, err


def test_text_probe_tunes_pooled_layers_and_pooling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    table = tmp_path / "reviews.csv"
    rows = [f"a wonderful and moving film {i},pos" for i in range(8)] + [f"a dull and boring mess {i},neg" for i in range(8)]
    table.write_text("text,label\n" + "\n".join(rows) + "\n")
    code, out, err = run_main(monkeypatch, capsys, "tune", str(table), "--trials", "4", "--storage",
                              f"sqlite:///{tmp_path}/s.db", "--out", str(tmp_path / "run"), "--engine", "torch", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert all(set(row["params"]) == {"l2", "class_weights", "feature_layers", "pooling"} for row in result["trials"])
    clf = load_classifier(tmp_path / "run")
    best = result["best"]["params"]
    assert (clf.config.feature_layers, clf.config.pooling) == (best["feature_layers"], best["pooling"])
    assert clf.predict(["a dull and boring mess"], text=True) == ["neg"]


def test_rerun_resumes_the_study_and_fails_a_killed_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    data = make_folder(tmp_path / "data", {"train": 6, "val": 3})
    url = f"sqlite:///{tmp_path}/study.db"
    first, _ = tune_json(monkeypatch, capsys, str(data), "--trials", "2", "--storage", url, "--out", str(tmp_path / "a"))
    name = first["study"]
    # a tune killed in its trial leaves it running, its heartbeat stopped
    monkeypatch.setattr(tuning_storage, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(tuning_storage, "GRACE_SECONDS", 1)
    storage = open_storage(url)
    with pytest.warns(UserWarning, match="Heartbeat"):  # optuna's reminder that optimize() beats, not ask()
        killed = optuna.load_study(study_name=name, storage=storage).ask()
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name),
                                                                              killed.number))
    time.sleep(2.2)  # SQLite's clock counts whole seconds
    second, err = tune_json(monkeypatch, capsys, str(data), "--trials", "4", "--storage", url, "--out", str(tmp_path / "b"))
    assert second["study"] == name and "2 of 4 trial(s) finished" in err
    trials = stored_trials(url, name)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert [row["params"] for row in second["trials"][:2]] == [row["params"] for row in first["trials"]]
    assert second["finished"] == 4 and len({t.params["l2"] for t in trials if t.params}) == 4  # no proposal repeated
    # enough finished trials: a third run fits the best again and runs none
    third, _ = tune_json(monkeypatch, capsys, str(data), "--trials", "3", "--storage", url, "--out", str(tmp_path / "c"))
    assert len(stored_trials(url, name)) == 5 and third["best"] == second["best"]
    # the same study name with other settings is refused before any work
    code, _, err = run_main(monkeypatch, capsys, "tune", str(data), "--trials", "4", "--storage", url, "--out",
                            str(tmp_path / "d"), "--study", name, *SMALL, "--seed", "1")
    assert code == 2 and "was started with seed = 0, not 1" in err and err.count("\n") == 1, err
    assert not (tmp_path / "d").exists()


class FakeContext(SimpleNamespace):
    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason


@pytest.mark.parametrize("pruner, stops", [("always", True), ("none", False)])
def test_prune_callback_reports_the_curve_and_stops_a_pruned_trial(tmp_path: Path, always_prune: str, pruner: str,
                                                                   stops: bool) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(storage=url, study_name="s", direction="maximize")
    trial = study.ask()
    callback = CALLBACKS.create(prune_spec(url, "s", trial.number, pruner))  # as the training loop builds it
    context = FakeContext(is_main=True, epoch=0, record={"val_accuracy": 0.5}, stop_reason=None)
    callback.fit_start(context)
    callback.epoch_end(context)
    (stored,) = study.get_trials(deepcopy=False)
    assert stored.intermediate_values == {1: 0.5}
    assert ("pruned" in (context.stop_reason or "")) is stops and (stored.user_attrs.get(PRUNED_ATTR) == 1) is stops


def test_pruned_finetune_trials_stop_after_their_first_epoch(tmp_path: Path, always_prune: str,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    data = make_folder(tmp_path / "data", {"train": 4, "val": 2})
    url = f"sqlite:///{tmp_path}/study.db"
    code, _, err = run_main(monkeypatch, capsys, "tune", str(data), "--space", "finetune", "--trials", "2",
                            "--storage", url, "--out", str(tmp_path / "run"), "--pruner", always_prune,
                            "--epochs", "2", "--study", "ft", *SMALL)
    assert code == 2 and "no finished trial with a value (2 pruned" in err.splitlines()[-1], err
    trials = stored_trials(url, "ft")
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    assert all(t.user_attrs[PRUNED_ATTR] == 1 and list(t.intermediate_values) == [1] for t in trials)
    assert "epoch 1/2" in err and "epoch 2/2" not in err  # each stopped before its second epoch
    assert {"lr", "layer_decay", "augment"} == set(trials[0].params)  # --epochs given: fixed, not tuned


def test_trials_never_read_the_test_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    data = make_folder(tmp_path / "data", {"train": 6, "val": 3, "test": 3})
    seen: list[list[str]] = []
    featurize = IMAGE.featurize
    monkeypatch.setattr(IMAGE, "featurize", lambda spec, items, *rest, **named: seen.append(list(items)) or
                        featurize(spec, items, *rest, **named))
    before_final: list[int] = []
    fit_best = tuning_study.fit_best
    monkeypatch.setattr(tuning_study, "fit_best", lambda *args: before_final.append(len(seen)) or fit_best(*args))
    result, _ = tune_json(monkeypatch, capsys, str(data), "--trials", "3", "--storage", f"sqlite:///{tmp_path}/s.db",
                          "--out", str(tmp_path / "run"))
    during, after = seen[:before_final[0]], seen[before_final[0]:]
    assert during and not any("/test/" in item for items in during for item in items)
    assert any("/test/" in item for items in after for item in items)  # only the final run scores it
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["n"] == 6
    assert result["finished"] == 3
    # fine-tuning trials fit through a classifier whose data has no test split
    assert len(ImageClassifier().read_data(str(data), None, None, RunConfig()).test) == 6
    assert len(trial_classifier(ImageClassifier)().read_data(str(data), None, None, RunConfig()).test) == 0


def test_spaces_tune_what_applies_and_leave_fixed_settings_alone() -> None:
    config = RunConfig()
    assert [d.name for d in PROBE.active("image", config, frozenset())] == ["l2", "class_weights"]
    assert [d.name for d in PROBE.active("text", config, frozenset({"l2"}))] == ["class_weights", "feature_layers",
                                                                                   "pooling"]
    assert [d.name for d in FINETUNE.active("text", config, frozenset())] == ["lr", "layer_decay", "epochs"]
    lora = config.replace(adapter="lora:alpha=8")
    active = FINETUNE.active("image", lora, frozenset({"adapter"}))
    assert [d.name for d in active] == ["lr", "layer_decay", "epochs", "augment", "adapter_rank"]
    tuned = FINETUNE.config_for({"adapter_rank": 4, "lr": 1e-4}, lora, active)
    assert tuned.adapter == "lora:alpha=8,r=4" and tuned.lr == 1e-4
    assert "adapter_rank" not in [d.name for d in FINETUNE.active("image", config.replace(adapter="lora:r=2"),
                                                                   frozenset())]


@pytest.mark.parametrize("args, message", [
    (["--storage", "study.db"], "not a database URL"),
    (["--storage", "sqlite:///{tmp}/missing/study.db"], "not found"),
    (["--storage", "sqlite:///:memory:"], "in-memory database keeps no study"),
    (["--storage", "nosuchdb://host/x"], "cannot open it as a study database"),
    (["--storage", "sqlite:///{tmp}/junk.db"], "cannot open it as a study database"),
    (["--trials", "0"], "--trials=0: expected an integer in [1, 100000]"),
    (["--space", "grid"], "--space grid: unknown search space; choose one of: probe, finetune"),
    (["--study", "a b"], "--study a b: use letters"),
    (["--study", "007"], "--study 007: use letters"),  # it would reach the trials' prune callback as 7
    (["--space", "finetune", "--strategy", "linear-probe"], "does not do; drop one of the two options"),
    (["--space", "probe", "--l2", "0.1", "--class-weights", "auto"], "nothing to tune"),
    (["--pruner", "hyperband"], "--pruner hyperband: unknown pruner"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    data = make_folder(tmp_path / "data", {"train": 2, "val": 1})
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    defaults = {"--storage": f"sqlite:///{tmp_path}/ok.db", "--trials": "2"}
    given = [a.replace("{tmp}", str(tmp_path)) for a in args]
    extra = [part for key, value in defaults.items() if key not in given for part in (key, value)]
    code, _, err = run_main(monkeypatch, capsys, "tune", str(data), "--out", str(tmp_path / "run"), *extra, *given)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_missing_optuna_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr("transferkit.tuning.base.find_spec", lambda name: None)
    code, _, err = run_main(monkeypatch, capsys, "tune", str(tmp_path), "--storage", "sqlite:///s.db", "--out",
                            str(tmp_path / "run"))
    assert code == 2 and "pip install 'transferkit[tune]'" in err and err.count("\n") == 1, err


def test_strict_stops_a_probe_study_on_an_unreadable_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    """Trials read the data as train does: --strict makes an unreadable image an error, not a skipped item."""
    data = make_folder(tmp_path / "data", {"train": 3, "val": 2})
    (data / "train" / "red" / "broken.png").write_bytes(b"not an image")
    args = ["tune", str(data), "--trials", "1", "--storage", f"sqlite:///{tmp_path}/study.db", "--out",
            str(tmp_path / "run"), *SMALL]
    code, _, err = run_main(monkeypatch, capsys, *args, "--strict")
    assert code == 2 and "1 unreadable file(s) in train" in err and "broken.png" in err, err
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 0 and "warning: skipped 1 unreadable file(s) in train" in err, err


def test_the_cli_names_exactly_the_pruners_there_are() -> None:
    """tuning/base.py declares the pruners without optuna: --help names each, and each space's default is one."""
    from transferkit.cli.tune import tune

    shown = get_type_hints(tune, include_extras=True)["pruner"].__metadata__[0].help
    assert all(f"{name}" in shown for name in PRUNERS.names())
    assert all(space.pruner in PRUNERS.names() for space in (PROBE, FINETUNE))
    assert isinstance(PRUNERS.create("median"), optuna.pruners.MedianPruner)


# -- the study's database, its URL's password, and what tune offers after an interruption -------------------------
SECRET = "s3cretPW"


def sqlite_tables(path: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(path) as db:
        names = sorted(row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    db.close()
    return names


def test_optuna_tables_are_the_installed_optunas() -> None:
    from optuna.storages._rdb import models

    assert tuning_storage.OPTUNA_TABLES == {*models.BaseModel.metadata.tables, "alembic_version"}


@pytest.mark.parametrize("tables", [("users", "orders"), ("trials",), ("studies", "version_info", "users")])
def test_a_database_of_another_application_is_refused_and_left_alone(tmp_path: Path, tables: tuple[str, ...]) -> None:
    import sqlite3

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        for table in tables:
            db.execute(f"CREATE TABLE {table} (id INTEGER)")
    db.close()
    with pytest.raises(tuning_storage.TuningError, match=r"holds tables that are not Optuna's \((orders, users|trials|"
                                                         r"users)\); keep the study in a database of its own"):
        open_storage(f"sqlite:///{path}")
    assert sqlite_tables(path) == sorted(tables)


def test_a_study_database_is_opened_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    open_storage(url, heartbeat=False)
    assert set(sqlite_tables(tmp_path / "study.db")) == tuning_storage.OPTUNA_TABLES
    open_storage(url, heartbeat=False)  # Optuna's own tables, and only those


@pytest.mark.parametrize("url", [f"postgresql://bob:{SECRET}@127.0.0.1:9/app", f"mysql://bob:{SECRET}@127.0.0.1:9/a,b",
                                 f"bob:{SECRET}@127.0.0.1/app", f"sqlite://bob:{SECRET}@/nowhere/study.db",
                                 f"postgresql://bob:{SECRET}%40x@127.0.0.1:9/app"])
def test_a_storage_password_is_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture, url: str) -> None:
    data = make_folder(tmp_path / "data", {"": 2})
    code, out, err = run_main(monkeypatch, capsys, "tune", str(data), "--storage", url, "--out", str(tmp_path / "run"))
    assert code == 2 and "bob:***@" in err and err.count("\n") == 1, err
    assert SECRET not in out + err


def test_a_librarys_message_loses_the_password_before_it_is_cut() -> None:
    url = f"postgresql://bob:{SECRET}@db.example/app"
    assert tuning_storage.shown_url(url) == "postgresql://bob:***@db.example/app"
    message = f"could not connect to {url}: password {SECRET} refused " + "x" * 300
    shown = tuning_storage.why(RuntimeError(message), url)
    assert SECRET not in shown and "bob:***@db.example" in shown and shown.endswith("...")


def test_tune_offers_no_resume_it_does_not_have(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    data = make_folder(tmp_path / "data", {"": 2})
    checkpoints = tmp_path / "run" / "checkpoints"  # what Ctrl-C in tune's final fit leaves
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.safetensors").write_bytes(b"x")
    (checkpoints / "config.yaml").write_text("strategy: finetune\n")
    code, _, err = run_main(monkeypatch, capsys, "tune", str(data), "--storage", f"sqlite:///{tmp_path}/s.db", "--out",
                            str(tmp_path / "run"))
    assert code == 2 and "unfinished training run; pass --overwrite to start again" in err and "--resume" not in err


def test_ctrl_c_in_the_final_fit_says_to_run_the_search_again(tmp_path: Path) -> None:
    from transferkit.errors import FRONT_END, RESUME_HINT
    from transferkit.train.loop import Trainer

    seen = []

    class Recorder:
        def __init__(self, **params: Any) -> None: ...

        def fit(self, data: Any, out: Any) -> "Recorder":
            trainer = SimpleNamespace(resumable=True, context=SimpleNamespace(directory=tmp_path))
            seen.append(Trainer.resume_hint(trainer))
            return self

    search = SimpleNamespace(space=SimpleNamespace(config_for=lambda params, config, dimensions: RunConfig(data="d")),
                             config=None, dimensions=[], classifier=Recorder, estimator_params=lambda config: {})
    token = FRONT_END.set("cli")
    try:
        tuning_study.fit_best(search, {}, tmp_path / "run")
    finally:
        FRONT_END.reset(token)
    assert seen == ["re-run the search with --overwrite to fit the best trial's settings again (the study keeps its "
                    "trials)"]
    assert RESUME_HINT.get() is None  # train's own interruptions say `train --resume` again
    hint = Trainer.resume_hint(SimpleNamespace(resumable=True, context=SimpleNamespace(directory=tmp_path)))
    assert hint.startswith("continue with `transferkit train --config") and hint.endswith("--resume`")


def test_ctrl_c_in_a_real_final_fit_names_tune_not_train_resume(tmp_path: Path) -> None:
    """Ctrl-C once the search is done and its best settings train into --out: the line says to run the search
    again with --overwrite (tune has no --resume), and the second run takes the folder as that says."""
    import os
    import signal
    import subprocess
    import sys

    data = make_folder(tmp_path / "data", {"train": 4, "val": 2})
    args = [sys.executable, "-m", "transferkit", "tune", str(data), "--space", "finetune", "--trials", "1",
            "--storage", f"sqlite:///{tmp_path}/study.db", "--out", str(tmp_path / "run"), "--epochs", "3",
            "--study", "ft", "--layer-decay", "1", "--augment", "none", *SMALL]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "300"}
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines, final, sent = [], False, False
    for line in proc.stderr:  # one Ctrl-C once the final fit trains (its handler stops at a checkpoint)
        lines.append(line)
        final = final or line.startswith("tune: fitting the best trial's settings")
        if final and line.startswith("epoch 1/3") and not sent:
            proc.send_signal(signal.SIGINT)
            sent = True
    proc.wait(timeout=600)
    hint = [line for line in lines if line.startswith("interrupted")]
    assert proc.returncode == 130 and len(hint) == 1, "".join(lines)[-2000:]
    assert "re-run the search with --overwrite" in hint[0] and "--resume" not in hint[0], hint
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 2 and "pass --overwrite to start again" in again.stderr
    assert "--resume" not in again.stderr


def test_trials_leave_out_the_items_exclude_names(tmp_path: Path) -> None:
    from transferkit.config import RunConfig
    from transferkit.estimators.image import ImageClassifier
    from transferkit.tuning.objective import read_without_test

    data = make_folder(tmp_path / "data", {"train": 4, "val": 2})
    dropped = sorted((data / "train").rglob("*.png"))[0]
    listing = tmp_path / "flagged.txt"
    listing.write_text(f"{dropped}\n")
    whole = read_without_test(ImageClassifier(), str(data), None, None, RunConfig(data=str(data)))
    config = RunConfig(data=str(data), exclude=str(listing))
    dataset = read_without_test(ImageClassifier(), str(data), None, None, config)
    assert str(dropped) in whole.train.items and str(dropped) not in dataset.train.items
    assert len(dataset.train) == len(whole.train) - 1 and dataset.val.items == whole.val.items
