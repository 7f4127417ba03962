"""Issue #11, run folders, cache, config and CLI: bad input is one line naming the file or field (exit 2 on
the command line), never a traceback or a silent wrong answer, and nothing the user had is lost."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_folder
from typer.testing import CliRunner

from transferkit import atomic
from transferkit.cli import app, main
from transferkit.config import MAX_CONFIG_BYTES, RunConfig
from transferkit.errors import (
    FRONT_END,
    CacheError,
    RunDirError,
    TransferkitError,
    arg,
    shown,
)
from transferkit.features import cache as cache_module
from transferkit.features import engines
from transferkit.features.cache import MARKER, FeatureStore, cache_clear, file_key
from transferkit.runs.folders import check_out_vs_data, check_writable, is_run_folder
from transferkit.runs.rundir import read_run, read_tensors, write_run

# billion laughs: 9 ** 9 "lol"s from 10 lines
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{','.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")) + "data: *i\n"


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """``transferkit ARGS`` through the console script's ``main``: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["transferkit", *map(str, args)])
    with pytest.raises(SystemExit) as stopped:
        main()
    return stopped.value.code, capsys.readouterr().err


def one_line(err: str, *words: str) -> str:
    """The single ``error: ...`` line of a failed command, checked to name ``words``."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err, err
    for word in words:
        assert word in lines[-1], (word, lines[-1])
    return lines[-1]


def checksum(folder: Path) -> str:
    """Every file's relative path and bytes: equal before and after means nothing was lost."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def fake_run(path: Path, classes: list[str] | None = None, overwrite: bool = False, **config: object) -> Path:
    """A small, complete run folder as write_run writes it (a head only: enough for everything but predicting)."""
    classes = classes or ["blue", "red"]
    tensors = {"head.weight": np.zeros((len(classes), 3), np.float32), "head.bias": np.zeros(len(classes), np.float32)}
    return write_run(path, config=RunConfig(**config), classes=classes, preprocessing={"input_size": 32},
                     tensors=tensors, model_meta={"format": "transferkit-image-1", "fingerprint": "f", "arch": "a"},
                     metrics={"val": {"accuracy": 1.0, "macro_f1": 1.0}}, overwrite=overwrite)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project folder: their own files, and image data inside it."""
    root = tmp_path / "project"
    make_folder(root / "data", {"train": 2, "val": 1})
    (root / "notes.txt").write_text("mine")
    (root / "src").mkdir()
    (root / "src" / "model.py").write_text("print('mine')\n")
    return root


# -- 1. config.yaml: no alias bombs, bounded size and messages ------------------------------------------------
def test_alias_bomb_is_refused_without_expanding(tmp_path: Path, monkeypatch, capsys) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(BOMB)
    with pytest.raises(TransferkitError, match="anchors and aliases") as caught:
        RunConfig.from_yaml(config)
    assert str(config) in str(caught.value) and len(str(caught.value)) < 200
    code, err = run_main(monkeypatch, capsys, "train", "--config", config, "--out", tmp_path / "run")
    assert code == 2
    one_line(err, str(config), "aliases")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("content", "wanted"), [
    ("base: &x 1\nseed: 2\n", "anchors and aliases"),
    (b"seed: 1\n# \xff\xfe\n", "not UTF-8"),
    ("[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    ("1: 2\n", "field names are words"),
    ("- a\n- b\n", "expected a mapping"),
    ("seed: !!python/object/apply:os.system ['touch owned']\n", "not valid YAML"),
    ("seed: 1\n" + "#" * MAX_CONFIG_BYTES + "\n", "larger than 1024 kB"),
])
def test_bad_config_files_are_one_line(tmp_path: Path, content: str | bytes, wanted: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(TransferkitError, match=wanted) as caught:
        RunConfig.from_yaml(config)
    assert str(caught.value).startswith(str(config)) and "\n" not in str(caught.value)
    assert not (tmp_path / "owned").exists()


@pytest.mark.parametrize("field", ["val_fraction", "strategy", "methods", "unknown_field_" + "x" * 900])
def test_values_in_messages_are_truncated(tmp_path: Path, field: str) -> None:
    huge = "y" * 100_000
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({field: [huge] if field == "methods" else huge}))  # JSON is YAML
    with pytest.raises(TransferkitError) as caught:
        RunConfig.from_yaml(config)
    message = str(caught.value)
    assert len(message) < 1000 and "..." in message, message[:300]
    assert shown("short") == "'short'"
    assert len(shown("z" * 10_000)) == 80 and "..." in shown("z" * 10_000)
    assert len(shown([[list(range(1000))] * 1000])) <= 80


# -- 2. --overwrite replaces runs only; never the data, a project or the current folder -----------------------
def test_overwrite_refuses_a_folder_that_is_not_a_run(project: Path, monkeypatch, capsys) -> None:
    before = checksum(project)
    code, err = run_main(monkeypatch, capsys, "train", project / "data", "--out", project, "--overwrite")
    assert code == 2
    one_line(err, str(project))
    assert checksum(project) == before
    other = project.parent / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("years of work")
    code, err = run_main(monkeypatch, capsys, "train", project / "data", "--out", other, "--overwrite")
    line = one_line(err, str(other), "not a transferkit run", "thesis.tex")
    assert code == 2 and "--overwrite" not in line  # nothing invites replacing it
    assert (other / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("where", ["data", "inside", "around"])
def test_out_is_never_the_data_inside_it_or_around_it(project: Path, where: str, monkeypatch, capsys) -> None:
    data = project / "data"
    out = {"data": data, "inside": data / "train" / "run", "around": project}[where]
    before = checksum(project)
    code, err = run_main(monkeypatch, capsys, "train", data, "--out", out, "--overwrite")
    assert code == 2
    one_line(err, str(out), "data")
    assert checksum(project) == before
    with pytest.raises(RunDirError, match="data"):
        check_out_vs_data(out, str(data))


def test_val_and_test_data_are_fields_and_are_protected_too(tmp_path: Path) -> None:
    config = RunConfig(data="train.csv", val_data="val.csv", test_data="test.csv")
    assert (config.val_data, config.test_data) == ("val.csv", "test.csv")
    assert "--val-data" in CliRunner().invoke(app, ["train", "--help"]).stdout
    (tmp_path / "held").mkdir()
    with pytest.raises(RunDirError, match="holds the data"):
        check_out_vs_data(tmp_path, str(tmp_path / "a.csv"), None, str(tmp_path / "held"))
    check_out_vs_data(tmp_path / "run", str(tmp_path / "a.csv"), None, ["texts", "not a path"])


def test_out_empty_or_current_folder_is_one_line(project: Path, monkeypatch, capsys) -> None:
    code, err = run_main(monkeypatch, capsys, "train", project / "data", "--out", "")
    assert code == 2 and "--out is empty" in one_line(err)
    monkeypatch.chdir(project / "src")
    before = checksum(project)
    code, err = run_main(monkeypatch, capsys, "train", "../data", "--out", ".", "--overwrite")
    assert code == 2 and "current folder" in one_line(err)
    run = fake_run(project.parent / "run")  # a run is not replaced from inside it either
    monkeypatch.chdir(run)
    code, err = run_main(monkeypatch, capsys, "train", project / "data", "--out", ".", "--overwrite")
    assert code == 2 and "current folder" in one_line(err)
    assert checksum(project) == before and is_run_folder(run)


def test_runs_are_replaced_only_with_overwrite_and_say_so_per_front_end(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    assert is_run_folder(run)
    with pytest.raises(RunDirError, match=r"already holds a run; pass overwrite=True to replace it, or choose "
                                          "another folder for the run"):
        check_writable(run, overwrite=False)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "data"), "--out", str(run)])
    assert "already holds a run; pass --overwrite to replace it, or choose another --out" in str(result.exception)
    assert FRONT_END.get() == "api"  # the command's setting ends with it
    assert (arg("epochs", 3), arg("cache", False)) == ("epochs=3", "cache=False")
    token = FRONT_END.set("cli")
    assert (arg("epochs", 3), arg("cache", False), arg("methods", "x", "--method")) == (
        "--epochs 3", "--no-cache", "--method x")
    FRONT_END.reset(token)
    fake_run(run, classes=["a", "b", "c"], overwrite=True)
    assert json.loads((run / "classes.json").read_text()) == ["a", "b", "c"]
    (run / "notes.txt").write_text("mine")  # a run the user has added to is no longer replaced
    with pytest.raises(RunDirError, match=r"not a transferkit run \(notes.txt\)"):
        fake_run(run, overwrite=True)
    assert (run / "notes.txt").read_text() == "mine"


def test_a_fine_tuning_runs_checkpoints_count_as_a_run_but_foreign_checkpoints_do_not(tmp_path: Path) -> None:
    out = tmp_path / "ft"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.safetensors").write_bytes(b"x")
    (out / "checkpoints" / "config.yaml").write_text("strategy: gradual\n")
    with pytest.raises(RunDirError, match="unfinished training run; pass resume=True"):
        check_writable(out, overwrite=False)
    check_writable(out, overwrite=True)
    (out / "checkpoints" / "epoch=3.ckpt").write_bytes(b"lightning")
    with pytest.raises(RunDirError, match=r"not a transferkit run \(checkpoints/epoch=3.ckpt\)"):
        check_writable(out, overwrite=True)
    run = fake_run(tmp_path / "run")  # a damaged run can still be replaced: its config.yaml says whose it is
    (run / "model.safetensors").write_bytes(b"garbage")
    assert read_run(fake_run(run, overwrite=True)).classes == ["blue", "red"]


# -- 3. cache clear deletes only transferkit's caches ---------------------------------------------------------
def test_cache_clear_clears_only_caches_transferkit_made_or_the_default_root(tmp_path: Path, monkeypatch,
                                                                             capsys) -> None:
    home = tmp_path / "home"
    (home / "features").mkdir(parents=True)
    (home / "features" / "my_features.npy").write_bytes(b"mine")
    (home / "engines").mkdir()
    before = checksum(home)
    with pytest.raises(CacheError, match="not marked as a transferkit cache"):
        cache_clear(home)
    code, err = run_main(monkeypatch, capsys, "cache", "clear", "--cache-dir", home)
    assert code == 2
    one_line(err, str(home), MARKER, "delete its features/ and engines/")
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(home))
    code, err = run_main(monkeypatch, capsys, "cache", "clear")
    assert code == 2 and str(home) in one_line(err)
    assert checksum(home) == before
    made = tmp_path / "new-cache"
    FeatureStore.open("fp", made).put(["k"], np.ones((1, 4), np.float32))
    assert (made / MARKER).is_file()
    assert cache_clear(made) > 0 and not (made / "features").exists()
    legacy = tmp_path / "legacy-default"  # made by an older version: no marker, but it is the default root
    (legacy / "features" / "fp").mkdir(parents=True)
    (legacy / "features" / "fp" / "x.npy").write_bytes(b"12345")
    monkeypatch.setattr(cache_module, "default_root", lambda: legacy)
    monkeypatch.delenv("TRANSFERKIT_CACHE")
    assert cache_clear() == 5 and not (legacy / "features").exists()
    shared = tmp_path / "shared"  # a folder holding other things is used, but never claimed
    shared.mkdir()
    (shared / "photos").mkdir()
    FeatureStore.open("fp", shared).put(["k"], np.ones((1, 4), np.float32))
    assert not (shared / MARKER).exists()
    with pytest.raises(CacheError):
        cache_clear(shared)


def test_file_keys_damaged_shards_and_an_unwritable_cache(tmp_path: Path, capsys) -> None:
    odd = tmp_path / os.fsdecode(b"caf\xe9.png")
    odd.write_bytes(b"x")
    assert len(file_key(odd)) == 24
    plain = tmp_path / "plain.png"
    plain.write_bytes(b"x")
    stat = plain.stat()
    old = hashlib.blake2b(f"{plain.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode(), digest_size=12)
    assert file_key(plain) == old.hexdigest()  # existing caches stay valid
    store = FeatureStore.open("fp", tmp_path / "c")
    store.put(["a", "b"], np.ones((2, 4), np.float32))
    shard = next(store.directory.glob("*.npy"))
    shard.write_bytes(shard.read_bytes()[:-8])  # cut short
    assert "a" not in FeatureStore.open("fp", tmp_path / "c")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    store = FeatureStore(blocker / "features" / "fp")
    store.put(["a"], np.ones((1, 4), np.float32))
    store.put(["b"], np.ones((1, 4), np.float32))
    err = capsys.readouterr().err
    assert err.count("warning: cannot write to the feature cache") == 1 and str(blocker) in err


# -- 4. damaged run files: one line in predict, evaluate, compare and --json; writable before the work ---------
DAMAGE = {
    "model.safetensors": [b"", b"garbage" * 10, "truncate"],
    "classes.json": [b"", b"{not json", b"{}", b"[]", b'["a", "a"]', b'[["a"]]'],
    "metrics.json": [b"", b"[1, 2]", b"\xff\xfe"],
    "preprocessing.json": [b"nul", b"[1]"],
    "config.yaml": [b"", b"- a\n", b"seed: [unclosed\n", BOMB.encode()],
}
CASES = [(name, i) for name, contents in DAMAGE.items() for i in range(len(contents))]


def damage(run: Path, name: str, index: int) -> None:
    content = DAMAGE[name][index]
    if content == "truncate":
        content = (run / name).read_bytes()[:-10]
    (run / name).write_bytes(content)


@pytest.mark.parametrize(("name", "index"), CASES)
def test_damaged_run_file_is_a_run_dir_error_naming_it(tmp_path: Path, name: str, index: int) -> None:
    run = fake_run(tmp_path / "run")
    damage(run, name, index)
    with pytest.raises(RunDirError) as caught:
        read_run(run)
    assert name in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("command", ["predict", "evaluate", "compare", "compare --json", "predict --json"])
@pytest.mark.parametrize(("name", "index"), [("model.safetensors", 2), ("classes.json", 1), ("metrics.json", 1),
                                             ("preprocessing.json", 0), ("config.yaml", 2)])
def test_damaged_run_file_is_one_line_in_every_command(tmp_path: Path, command: str, name: str, index: int,
                                                       monkeypatch, capsys) -> None:
    run = fake_run(tmp_path / "run")
    damage(run, name, index)
    before = checksum(run)
    words = command.split()
    extra = {"predict": [str(tmp_path / "x.png")], "evaluate": [str(tmp_path)], "compare": []}[words[0]]
    code, err = run_main(monkeypatch, capsys, words[0], run, *extra, *words[1:])
    assert code == 2
    one_line(err, name)
    assert checksum(run) == before


def test_read_tensors_and_head_checks(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    assert set(read_tensors(run / "model.safetensors", "head.")) == {"weight", "bias"}
    (run / "classes.json").write_text('["a", "b", "c"]')
    with pytest.raises(RunDirError, match="2 outputs but classes.json lists 3"):
        read_run(run)
    damage(run, "model.safetensors", 2)
    with pytest.raises(RunDirError, match="model.safetensors: damaged"):
        read_tensors(run / "model.safetensors", "head.")
    with pytest.raises(RunDirError, match="missing.safetensors"):
        read_tensors(tmp_path / "missing.safetensors")
    run = fake_run(run, overwrite=True)  # safetensors makes its file 0600: the run's files share one mode
    modes = {name: (run / name).stat().st_mode & 0o777 for name in ("model.safetensors", "classes.json",
                                                                     "config.yaml", "metrics.json")}
    assert len(set(modes.values())) == 1, modes


def test_out_that_cannot_be_written_is_refused_before_the_work(tmp_path: Path, project: Path, monkeypatch,
                                                               capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = run_main(monkeypatch, capsys, "train", project / "data", "--out", blocker / "run")
    assert code == 2 and "not a folder" in one_line(err, str(blocker))

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    if os.geteuid() != 0:  # root writes into read-only folders
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(RunDirError, match="Permission denied"):
            check_writable(tmp_path / "ro" / "run", overwrite=False)
    monkeypatch.setattr(atomic.tempfile, "TemporaryFile", denied)  # as a read-only mount would, even for root
    with pytest.raises(RunDirError, match="cannot write the run there \\(Permission denied"):
        check_writable(tmp_path / "new-run", overwrite=False)


def test_cache_that_cannot_be_written_is_refused_or_replaced(tmp_path: Path, project: Path, monkeypatch,
                                                                 capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = run_main(monkeypatch, capsys, "train", project / "data", "--out", tmp_path / "run",
                         "--cache-dir", blocker / "cache")
    assert code == 2
    one_line(err, str(blocker), "--cache-dir", "--no-cache")
    assert not (tmp_path / "run").exists()
    run = fake_run(tmp_path / "ok")
    code, err = run_main(monkeypatch, capsys, "evaluate", run, project / "data", "--cache-dir", blocker / "cache")
    assert code == 2 and "--cache-dir" in one_line(err, str(blocker))
    elsewhere = tmp_path / "machine-a-cache"  # a run's stored cache folder is never written to: the default is
    elsewhere.mkdir()
    run = fake_run(tmp_path / "copied", cache_dir=str(elsewhere))
    assert read_run(run).config.cache_dir is None


@pytest.mark.parametrize("fault", ["full disk", "failed swap"])
def test_a_failed_write_is_one_line_and_keeps_the_old_run(tmp_path: Path, fault: str, monkeypatch) -> None:
    import safetensors.numpy

    run = fake_run(tmp_path / "run")
    before, real = checksum(run), os.replace

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def failing(source: object, target: object) -> None:  # the new run cannot be renamed into place
        if str(source).endswith(".tmp") and Path(str(target)).name == "run":
            raise OSError(errno.EIO, "Input/output error")
        real(source, target)

    if fault == "full disk":
        monkeypatch.setattr(safetensors.numpy, "save_file", full)
    else:
        monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(RunDirError, match="run: cannot write the run \\((No space left|Input/output)"):
        fake_run(run, classes=["x", "y"], overwrite=True)
    monkeypatch.undo()
    assert checksum(run) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_os_error_nothing_foresaw_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from transferkit.runs import rundir

    def full(path: object, required: object = ()) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "somewhere"))

    monkeypatch.setattr(rundir, "read_run", full)
    code, err = run_main(monkeypatch, capsys, "compare", tmp_path)
    assert code == 2
    one_line(err, str(tmp_path / "somewhere"), "No space left on device")


# -- 5. options that would do nothing ------------------------------------------------------------------------
def test_fine_tuning_options_with_a_linear_probe_are_an_error_naming_them(tmp_path: Path, project: Path,
                                                                          monkeypatch, capsys) -> None:
    with pytest.raises(TransferkitError, match="epochs=3 is ignored by strategy='linear-probe'"):
        RunConfig(epochs=3).validate()
    RunConfig(epochs=3)  # built one parameter at a time (scikit-learn's clone, set_params): checked at fit
    RunConfig(strategy="gradual", epochs=3).validate()
    RunConfig().to_yaml(tmp_path / "defaults.yaml")  # a config.yaml that carries every default loads and runs
    RunConfig.from_yaml(tmp_path / "defaults.yaml").validate()
    for option, shown_as in ((["--epochs", "3"], "--epochs 3"), (["--lr", "0.1"], "--lr 0.1"),
                             (["--no-nesterov"], "--no-nesterov"), (["--precision", "bf16"], "--precision bf16"),
                             (["--optimizer", "sgd"], "--optimizer sgd"), (["--method", "l2sp"], "--method l2sp")):
        code, err = run_main(monkeypatch, capsys, "train", project / "data", "--out", tmp_path / "run", *option)
        assert code == 2
        one_line(err, f"{shown_as} is ignored by --strategy linear-probe")
    assert not (tmp_path / "run").exists()


def test_fp16_without_a_gpu_and_top_k_zero_are_errors(tmp_path: Path, project: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(engines, "gpu_present", lambda: False)
    with pytest.raises(TransferkitError, match="precision='fp16': fp16 autocast needs a CUDA GPU"):
        engines.check_precision_device("fp16")
    engines.check_precision_device("bf16")
    code, err = run_main(monkeypatch, capsys, "train", project / "data", "--out", tmp_path / "run",
                         "--strategy", "finetune", "--precision", "fp16")
    assert code == 2
    one_line(err, "--precision fp16", "--precision bf16")
    code, err = run_main(monkeypatch, capsys, "predict", fake_run(tmp_path / "run"), "x.png", "--top-k", "0")
    assert code == 2
    one_line(err, "--top-k 0", "k >= 1")
