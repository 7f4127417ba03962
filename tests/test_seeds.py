"""Issue #15, seeds and confidence: ``train --seeds`` writes a run per seed and their spread; ``compare`` shows
mean, std and the t-interval over seeds, and a paired-bootstrap verdict between two runs on the same items.
Statistics are checked against values computed by hand; folder safety on constructed runs (no training);
the few real trainings are linear probes on a tiny image folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import FAST, make_folder, run_main
from scipy import stats
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.config import RunConfig
from transferkit.confidence import paired_bootstrap, t_interval
from transferkit.errors import TransferkitError
from transferkit.metrics import classification_metrics, items_digest
from transferkit.runs.folders import is_run_folder, is_seeds_folder
from transferkit.runs.rundir import read_run, write_run
from transferkit.runs.seeds import parse_seeds, write_manifest

runner = CliRunner()
SIZE = ["--image-size", str(FAST["image_size"])]


def one_error_line(err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])


def invoke(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


# -- constructed runs: a head and metrics only, written as train writes them --------------------------------
def fake_run(path: Path, seed: int = 0, split: str = "val", correct: str = "1100", items: str | None = "same",
             **config: object) -> Path:
    n, right = len(correct), correct.count("1")
    scores = {"n": n, "accuracy": right / n, "macro_f1": right / n, "correct": correct}
    if items is not None:
        scores["items"] = items_digest([f"item{i}" for i in range(n)], [0] * n) if items == "same" else items
    tensors = {"head.weight": np.zeros((2, 3), np.float32), "head.bias": np.zeros(2, np.float32)}
    return write_run(path, config=RunConfig(seed=seed, **config), classes=["blue", "red"],
                     preprocessing={"input_size": 32}, tensors=tensors,
                     model_meta={"format": "transferkit-image-1", "fingerprint": "f", "arch": "a"},
                     metrics={split: scores, "train_seconds": 1.0, "trainable_parameters": 6})


def fake_seeds(path: Path, corrects: list[str], **kwargs: object) -> Path:
    seeds = list(range(len(corrects)))
    for seed, correct in zip(seeds, corrects):
        fake_run(path / f"seed-{seed}", seed=seed, correct=correct, **kwargs)
    write_manifest(path, seeds)
    return path


def pattern(n: int, right: range | list[int]) -> str:
    """``n`` items, those in ``right`` correct."""
    return "".join("1" if i in right else "0" for i in range(n))


# -- statistics against values computed by hand -------------------------------------------------------------
def test_t_interval_matches_scipy_student_t() -> None:
    values = [0.80, 0.85, 0.90]
    spread = t_interval(values)
    half = stats.t.ppf(0.975, df=2) * 0.05 / math.sqrt(3)  # std of 0.80, 0.85, 0.90 (ddof=1) is 0.05
    assert spread.n == 3 and spread.mean == pytest.approx(0.85) and spread.std == pytest.approx(0.05)
    assert (spread.low, spread.high) == (pytest.approx(0.85 - half), pytest.approx(0.85 + half))
    assert half == pytest.approx(0.12421, abs=1e-5)  # t(0.975, 2) = 4.3027
    one = t_interval([0.9])
    assert (one.mean, one.std, one.low, one.high) == (0.9, None, None, None)


def test_bootstrap_a_clear_gain_is_outside_noise_and_a_reshuffle_within() -> None:
    n = 200
    a = np.array([[i < 80 for i in range(n)], [i < 84 for i in range(n)]], float)  # 40% and 42%
    better = np.array([[i < 160 for i in range(n)]] * 3, float)  # 80% on every seed
    verdict = paired_bootstrap(a, better)
    assert verdict.gain == pytest.approx(39.0) and verdict.outside_noise and verdict.low > 30
    assert verdict.items == n and verdict.resamples == 10_000
    # the same accuracy, right on a few other items: no gain, and an interval around zero
    same = np.array([[2 <= i < 82 for i in range(n)]], float)
    within = paired_bootstrap(a[:1], same)
    assert within.gain == 0 and within.low < 0 < within.high and not within.outside_noise
    assert "within noise" in within.sentence() and "outside noise" in verdict.sentence()
    # a fixed RNG seed: the same runs always get the same interval
    assert paired_bootstrap(a, better).to_dict() == verdict.to_dict()


def test_bootstrap_interval_matches_the_normal_approximation() -> None:
    """B right on 30 of 400 items A gets wrong, nothing else differs: the gain's bootstrap interval is close to
    the normal one, 100 * (p +- 1.96 * sd(d) / sqrt(n))."""
    n = 400
    diff = np.zeros(n)
    diff[:30] = 1
    verdict = paired_bootstrap(np.zeros((1, n)), diff[None])
    half = 1.96 * diff.std(ddof=1) / math.sqrt(n) * 100
    assert verdict.gain == pytest.approx(7.5)
    assert verdict.low == pytest.approx(7.5 - half, abs=0.5) and verdict.high == pytest.approx(7.5 + half, abs=0.5)


def test_metrics_record_which_items_were_right() -> None:
    report = classification_metrics(np.array([0, 1, 1, 0]), np.array([[.9, .1], [.8, .2], [.3, .7], [.4, .6]]),
                                    ["a", "b"])
    assert report["correct"] == "1010"


@pytest.mark.parametrize(("spec", "says"), [("0,x", "integers"), ("0,0", "twice"), ("3", "two seeds"),
                                            ("", "integers"), ("-1,2", "integers"), (f"0,{2**32}", "at most")])
def test_bad_seed_specs_are_one_line(spec: str, says: str) -> None:
    with pytest.raises(TransferkitError, match=says):
        parse_seeds(spec)
    assert parse_seeds(" 2, 0,7") == [2, 0, 7]


# -- compare: spread and verdict on constructed runs ----------------------------------------------------------
def test_compare_shows_mean_std_and_t_interval_of_a_seeds_folder(tmp_path: Path) -> None:
    group = fake_seeds(tmp_path / "probe", [pattern(20, range(16)), pattern(20, range(17)), pattern(20, range(18))])
    single = fake_run(tmp_path / "single", correct=pattern(20, range(17)))
    data = json.loads(invoke("compare", group, single, "--json"))
    row = data["runs"][0]
    half = stats.t.ppf(0.975, df=2) * 0.05 / math.sqrt(3)
    assert row["seeds"] == [0, 1, 2] and row["val_accuracy"] == pytest.approx(0.85)
    spread = row["spread"]["val_accuracy"]
    assert spread["std"] == pytest.approx(0.05) and spread["low"] == pytest.approx(0.85 - half)
    assert "seeds" not in data["runs"][1] and data["runs"][1]["val_accuracy"] == pytest.approx(0.85)
    text = invoke("compare", group, single)
    assert "mean of 3 seeds" in text and "0.850" in text and "0.050" in text
    assert f"[{0.85 - half:.3f}, {0.85 + half:.3f}]" in text  # [0.726, 0.974]
    assert max(len(line) for line in text.splitlines()) <= 80


def test_verdict_outside_noise_and_within_noise(tmp_path: Path) -> None:
    n = 100
    weak = fake_seeds(tmp_path / "weak", [pattern(n, range(40)), pattern(n, range(42)), pattern(n, range(44))])
    strong = fake_seeds(tmp_path / "strong", [pattern(n, range(90)), pattern(n, range(88)), pattern(n, range(92))])
    close = fake_seeds(tmp_path / "close", [pattern(n, range(2, 44)), pattern(n, range(1, 42)),
                                            pattern(n, range(3, 43))])
    text = invoke("compare", weak, strong)
    assert f"the same {n} val items" in text and "gain +48.0 points" in text and ": outside noise" in text
    verdict = json.loads(invoke("compare", weak, strong, "--json"))["verdict"]
    assert (verdict["a"], verdict["b"], verdict["split"]) == (str(weak), str(strong), "val")
    assert verdict["gain"] == pytest.approx(48.0) and verdict["outside_noise"] and verdict["low"] > 35
    assert verdict["resamples"] == 10_000
    text = invoke("compare", weak, close)  # 41% against 42%, right on nearly the same items
    assert "gain -1.0 points, 95% interval [-" in text and ": within noise" in text
    # the other way round is a loss, and three runs get no verdict
    assert "gain -48.0 points" in invoke("compare", strong, weak)
    assert json.loads(invoke("compare", weak, strong, close, "--json"))["verdict"] is None


def test_runs_scored_on_different_items_get_one_line_and_no_verdict(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "a", correct="1100")
    b = fake_run(tmp_path / "b", correct="1110", items=items_digest(["other0", "other1", "other2", "other3"], [0] * 4))
    text = invoke("compare", a, b)
    assert "no verdict: .../a and .../b were scored on different val items\n" in text
    assert "gain" not in text
    assert "reason" in json.loads(invoke("compare", a, b, "--json"))["verdict"]
    # a run that does not say which items it was scored on is not paired either
    c = fake_run(tmp_path / "c", correct="1110", items=None)
    assert "does not record which items" in invoke("compare", a, c)
    # seeds whose validation split was drawn with each seed: their items differ
    drawn = tmp_path / "drawn"
    fake_run(drawn / "seed-0", seed=0, correct="1100")
    fake_run(drawn / "seed-1", seed=1, correct="1100", items="another-digest")
    write_manifest(drawn, [0, 1])
    assert "were scored on different val items" in " ".join(invoke("compare", drawn, a).split())


def test_a_mixed_seeds_folder_is_one_line_not_a_mixed_mean(tmp_path: Path, monkeypatch, capsys) -> None:
    mixed = tmp_path / "mixed"
    fake_run(mixed / "seed-0", seed=0)
    fake_run(mixed / "seed-1", seed=1, image_size=160)  # left over from an interrupted --overwrite
    write_manifest(mixed, [0, 1])
    code, _, err = run_main(monkeypatch, capsys, "compare", mixed)
    assert code == 2
    one_error_line(err, "image_size", "not seeds of one configuration")
    missing = fake_seeds(tmp_path / "missing", ["10", "01"])
    write_manifest(missing, [0, 1, 2])
    code, _, err = run_main(monkeypatch, capsys, "compare", missing)
    assert code == 2
    one_error_line(err, "seed-2", "missing or unfinished")


# -- folder safety: nothing but a seeds folder is ever replaced by one --------------------------------------
def test_seeds_and_seed_together_and_bad_specs_fail_before_any_work(tmp_path: Path, monkeypatch, capsys) -> None:
    data = make_folder(tmp_path / "data", {"train": 2, "val": 1})
    out = tmp_path / "out"
    code, _, err = run_main(monkeypatch, capsys, "train", data, "--out", out, "--seeds", "0,1", "--seed", "3")
    assert code == 2
    one_error_line(err, "--seeds and --seed")
    code, _, err = run_main(monkeypatch, capsys, "train", data, "--out", out, "--seeds", "0,1,x")
    assert code == 2
    one_error_line(err, "--seeds 0,1,x")
    code, _, err = run_main(monkeypatch, capsys, "train", data, "--out", out, "--seeds", "0,1", "--epochs", "3")
    assert code == 2
    one_error_line(err, "--epochs 3")  # a setting every seed would refuse: before the first seed's fit
    assert not out.exists()


def test_overwrite_never_replaces_a_folder_that_is_not_a_seeds_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    data = make_folder(tmp_path / "data", {"train": 2, "val": 1})
    mine = tmp_path / "mine"
    (mine / "seed-0").mkdir(parents=True)
    (mine / "seed-0" / "notes.txt").write_text("mine")  # named like a seed's run, but the user's
    mixed = fake_seeds(tmp_path / "mixed", ["10", "01"])
    (mixed / "notes.txt").write_text("mine")
    single = fake_run(tmp_path / "single")
    for out, says in [(mine, "not transferkit runs"), (mixed, "not transferkit runs"), (single, "a single run")]:
        before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
        code, _, err = run_main(monkeypatch, capsys, "train", data, "--out", out, "--seeds", "0,1", "--overwrite",
                             *SIZE)
        assert code == 2
        one_error_line(err, str(out), says)
        assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert (mine / "seed-0" / "notes.txt").read_text() == "mine" and not is_seeds_folder(mine)
    # and a single run's --overwrite does not replace a seeds folder
    group = fake_seeds(tmp_path / "group", ["10", "01"])
    code, _, err = run_main(monkeypatch, capsys, "train", data, "--out", group, "--overwrite", *SIZE)
    assert code == 2
    one_error_line(err, "one run per seed", "--seeds")
    assert is_seeds_folder(group)


# -- real runs: linear probes on a tiny folder --------------------------------------------------------------
def test_seeds_run_writes_a_run_per_seed_and_a_summary(tmp_path: Path, monkeypatch, capsys) -> None:
    data = make_folder(tmp_path / "data", {"train": 6, "val": 3})
    out = tmp_path / "runs" / "probe"
    text = invoke("train", data, "--out", out, "--seeds", "0,1,2", *SIZE)
    assert "over 3 seeds" in text and "val accuracy  mean" in text
    assert sorted(p.name for p in out.iterdir()) == ["seed-0", "seed-1", "seed-2", "seeds.json"]
    for seed in (0, 1, 2):
        folder = out / f"seed-{seed}"
        assert is_run_folder(folder) and yaml.safe_load((folder / "config.yaml").read_text())["seed"] == seed
        val = read_run(folder).metrics["val"]
        assert len(val["correct"]) == val["n"] == 6 and isinstance(val["items"], str)
    manifest = json.loads((out / "seeds.json").read_text())
    assert manifest["seeds"] == [0, 1, 2] and manifest["summary"]["val_accuracy"]["n"] == 3
    assert is_seeds_folder(out)
    # each seed's folder is a normal run; the folder itself says what it is
    assert "predictions" in invoke("predict", out / "seed-1", data / "val" / "red" / "img_0.png", "--json")
    code, _, err = run_main(monkeypatch, capsys, "predict", out, data / "val" / "red" / "img_0.png")
    assert code == 2
    one_error_line(err, "one run per seed")


def test_overwrite_replaces_a_seeds_folder_and_a_single_run_pairs_with_it(tmp_path: Path, monkeypatch,
                                                                          capsys) -> None:
    data = make_folder(tmp_path / "data", {"train": 6, "val": 3})
    out = tmp_path / "runs" / "probe"
    invoke("train", data, "--out", out, "--seeds", "0,1,2", *SIZE)
    # a single run on the same data is scored on the same items: a verdict, not a refusal
    single = invoke("train", data, "--out", tmp_path / "runs" / "single", *SIZE)
    assert "saved to" in single
    verdict = json.loads(invoke("compare", out, tmp_path / "runs" / "single", "--json"))["verdict"]
    assert verdict["items"] == 6 and verdict["gain"] == pytest.approx(0.0) and not verdict["outside_noise"]
    # again: refused without --overwrite, replaced with it (a shorter list of seeds drops the others)
    code, _, err = run_main(monkeypatch, capsys, "train", data, "--out", out, "--seeds", "3,4", *SIZE)
    assert code == 2
    one_error_line(err, "already holds the runs of several seeds", "--overwrite")
    payload = json.loads(invoke("train", data, "--out", out, "--seeds", "3,4", "--overwrite", "--json", *SIZE))
    assert payload["seeds"] == [3, 4] and set(payload["metrics"]) == {"seed-3", "seed-4"}
    assert sorted(p.name for p in out.iterdir()) == ["seed-3", "seed-4", "seeds.json"]


def test_seeds_with_a_validation_split_drawn_per_seed_get_no_paired_verdict(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "data", {"": 8})  # no val/: each seed draws its own validation items
    out = tmp_path / "drawn"
    invoke("train", data, "--out", out, "--seeds", "0,1", "--val-fraction", "0.5", *SIZE)
    digests = {read_run(out / f"seed-{s}").metrics["val"]["items"] for s in (0, 1)}
    assert len(digests) == 2
    text = " ".join(invoke("compare", out, out).split())
    assert "no verdict: the seeds of" in text and "different val items" in text
