"""The command line: generated train options, one-line errors, --version, repeatable --method/--callback."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import typing
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import make_folder
from typer.testing import CliRunner

from transferkit import __version__
from transferkit.cli import app, main
from transferkit.cli.compare import short_names
from transferkit.cli.options import option_name
from transferkit.config import FIELD_TYPES, RunConfig, choices
from transferkit.plugins import CALLBACKS, LOSS_TERMS
from transferkit.strategies import STRATEGY_NAMES

runner = CliRunner()


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """``transferkit ARGS`` through the console script's ``main`` (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["transferkit", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    return stopped.value.code, capsys.readouterr().err


@pytest.fixture
def plugins():
    """A loss term and a callback registered for one test (the built-in registries may have none)."""
    from transferkit.train.callbacks import Callback
    from transferkit.train.losses import LossTerm

    class NoTerm(LossTerm):
        name = "test-term"

        def forward(self, batch, outputs):
            return outputs.logits.sum() * 0.0

    class NoLog(Callback):
        def __init__(self, every: int = 1) -> None:
            self.every = every

    class OtherTerm(NoTerm):
        name = "zero-loss"

    LOSS_TERMS.register("test-term", NoTerm)
    LOSS_TERMS.register("zero-loss", OtherTerm)
    CALLBACKS.register("test-log", NoLog)
    yield
    LOSS_TERMS.unregister("test-term")
    LOSS_TERMS.unregister("zero-loss")
    CALLBACKS.unregister("test-log")


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"transferkit {__version__}"


def test_train_help_is_generated_from_run_config() -> None:
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    words = set(re.findall(r"[\w:-]+", text))
    assert set(STRATEGY_NAMES) <= words
    for name, hint in FIELD_TYPES.items():  # every choice of every Literal field, optimizer and schedule included
        assert set(choices(hint)) <= words, name
    assert {"sgd", "adamw", "one-cycle", "multistep"} <= words
    # each field once, by the option that starts its row (help texts may mention other options)
    listed = Counter(re.findall(r"^│ (--[\w-]+)", text, re.MULTILINE))
    for field in dataclasses.fields(RunConfig):
        if field.name == "data":  # the DATA argument
            assert re.search(r"^│ +data ", text, re.MULTILINE)
            continue
        assert listed[option_name(field)] == 1, field.name
    assert {"--no-cache", "--strict", "--method", "--callback", "--adapter", "--val-fraction"} <= set(listed)


def test_a_flag_on_by_default_says_it_turns_the_setting_off() -> None:
    from transferkit.cli.options import option_help

    for name in ("pretrained", "cache", "nesterov"):  # shown as --no-NAME: its help must not read as turning it on
        field = next(f for f in dataclasses.fields(RunConfig) if f.name == name)
        assert option_name(field) == f"--no-{name}" and option_help(field).startswith("Turn off (on by default): ")
    strict = next(f for f in dataclasses.fields(RunConfig) if f.name == "strict")
    assert option_help(strict).endswith("(default: off)") and option_name(strict) == "--strict"
    text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).stdout
    assert re.search(r"--no-pretrained +<bool> +Turn off \(on by default\): start from the backbone's pretrained", text)


def test_cli_start_up_imports_no_heavy_library() -> None:
    code = ("import sys, transferkit.cli.app; "
            "print([m for m in ('torch', 'numpy', 'sklearn', 'transformers', 'PIL') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_wrong_type_in_yaml_is_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text('data: somewhere\nval_fraction: "0.2"\n')
    result = subprocess.run([sys.executable, "-m", "transferkit", "train", "--config", str(config), "--out",
                             str(tmp_path / "run")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: config field 'val_fraction' = '0.2': expected a number in [0, 1)"


@pytest.mark.parametrize(("args", "wanted"), [
    (["train", "data", "--epochs", "abc"], "error: Invalid value for '--epochs': Input should be a valid integer"),
    (["train", "data", "--nope"], "error: No such option: --nope"),
    (["serve"], "error: Missing argument 'run'."),
    (["nosuch"], "error: No such command 'nosuch'."),
])
def test_usage_mistakes_are_one_line_errors(args: list[str], wanted: str) -> None:
    result = subprocess.run([sys.executable, "-m", "transferkit", *args], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(wanted) and result.stderr.count("\n") == 1, result.stderr
    assert "--help')" in result.stderr  # says where to look


@pytest.mark.parametrize(("args", "wanted"), [
    (["--adapter", "bitfitt"], "adapter 'bitfitt' is not known; did you mean bitfit?"),
    (["--method", "test-term:weight=1", "--method", "test-trem"],
     "method 'test-trem' is not known; did you mean test-term?"),
    (["--callback", "test-lgo"], "callback 'test-lgo' is not known; did you mean test-log?"),
    (["--optimizer", "adamw", "--strategy", "last-k:0"], "strategy 'last-k:0': expected last-k:N"),
])
def test_unknown_names_are_one_line_errors_with_close_matches(args: list[str], wanted: str, tmp_path: Path, plugins,
                                                              monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    code, err = run_main(monkeypatch, capsys, "train", str(tmp_path), "--out", str(tmp_path / "run"), *args)
    assert code == 2 and err.startswith("error: ") and wanted in err
    assert err.strip().count("\n") == 0


def test_method_and_callback_repeat_and_land_in_the_saved_config(tmp_path: Path, plugins) -> None:
    data = make_folder(tmp_path / "data", {"train": 6, "val": 3})
    first, second = tmp_path / "a", tmp_path / "b"
    result = runner.invoke(app, ["train", str(data), "--out", str(first), "--image-size", "64", "--strict",
                                 "--strategy", "finetune", "--epochs", "1", "--batch-size", "4", "--workers", "0",
                                 "--no-cache", "--method", "test-term:weight=0.5", "--method", "zero-loss",
                                 "--callback", "test-log", "--callback", "test-log:every=2"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((first / "config.yaml").read_text())
    assert saved["methods"] == ["test-term:weight=0.5", "zero-loss"]
    assert saved["callbacks"] == ["test-log", "test-log:every=2"]
    assert (saved["strict"], saved["cache"], saved["image_size"]) == (True, False, 64)
    # re-run from the saved config: options left unset keep its values, options given replace them
    result = runner.invoke(app, ["train", "--config", str(first / "config.yaml"), "--out", str(second),
                                 "--seed", "1", "--callback", "test-log"])
    assert result.exit_code == 0, result.output
    again = RunConfig.from_yaml(second / "config.yaml")
    assert again.methods == ["test-term:weight=0.5", "zero-loss"] and again.callbacks == ["test-log"]
    assert (again.seed, again.strict, again.cache, again.image_size) == (1, True, False, 64)


def test_list_fields_are_lists_of_specs() -> None:
    assert typing.get_origin(FIELD_TYPES["methods"]) is list and RunConfig().methods == []
    assert RunConfig().methods is not RunConfig().methods  # a fresh list per config
    with pytest.raises(Exception, match="config field 'callbacks' = 'x': expected a list"):
        RunConfig(callbacks="x")


def test_compare_shortens_long_run_paths() -> None:
    paths = [Path("/very/long/experiments/folder/2024/ants/run-a"),
             Path("/very/long/experiments/folder/2024/bees/run-a"), Path("runs/short")]
    assert short_names(paths) == [".../ants/run-a", ".../bees/run-a", "runs/short"]


def test_demo_data_ships_inside_the_package() -> None:
    from transferkit.demo import DEMO_DATA
    from transferkit.modalities.image.folders import load_image_folder

    dataset = load_image_folder(DEMO_DATA, val_fraction=0.2, seed=0)
    assert len(dataset.classes) == 10 and len(dataset.train) + len(dataset.val) == 200 and len(dataset.test) == 300
    assert (DEMO_DATA / "SOURCE.md").is_file()
