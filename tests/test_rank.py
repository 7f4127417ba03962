"""``transferkit rank``: the scores against their definitions, the recommendation's rules, the command on a tiny
image folder (cached second run without torch), and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_folder, run_main
from scipy.stats import multivariate_normal

from transferkit.selection.crossval import fold_count, knn_accuracy, probe_accuracy, stratified_folds
from transferkit.selection.evidence import class_evidences, logme
from transferkit.selection.hscore import h_score, ledoit_wolf
from transferkit.selection.recommend import Candidate, choose_strategy, recommend
from transferkit.selection.source import leep, nce, source_probabilities

SMALL = ("--image-sizes", "32", "--engine", "torch", "--workers", "0", "--batch-size", "8")


def features_pair(n: int = 90, d: int = 40, seed: int = 0,
                  shift: float = 1.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, informative features, uninformative ones): each class shifted along its own axis vs noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n // 3)
    informative = rng.normal(size=(n, d))
    informative[np.arange(n), labels] += shift
    return labels, informative, rng.normal(size=(n, d))


@pytest.mark.parametrize("n, d", [(90, 40), (30, 60)])  # more samples than features, and fewer
def test_logme_ranks_informative_features_higher_and_is_the_maximum_evidence(n: int, d: int) -> None:
    labels, good, noise = features_pair(n, d)
    assert logme(good, labels) > logme(noise, labels)
    for c, found in enumerate(class_evidences(good, labels)):  # the Gaussian marginal likelihood, computed directly
        y = (labels == c).astype(float)

        def evidence(alpha: float, beta: float) -> float:
            covariance = np.eye(n) / beta + good @ good.T / alpha
            return multivariate_normal(np.zeros(n), covariance).logpdf(y) / n

        assert found.value == pytest.approx(evidence(found.alpha, found.beta), abs=1e-9)
        for a, b in ((1.1, 1), (0.9, 1), (1, 1.1), (1, 0.9)):  # the fixed point is a maximum
            assert evidence(found.alpha * a, found.beta * b) <= found.value + 1e-6


def test_h_score_matches_ledoit_wolf_and_ranks_informative_features_higher() -> None:
    from sklearn.covariance import ledoit_wolf_shrinkage

    labels, good, noise = features_pair(30, 60)  # fewer samples than features: the plain H-score is unstable
    assert h_score(good, labels) > h_score(noise, labels)
    centred = good - good.mean(axis=0)
    assert ledoit_wolf(centred).shrinkage == pytest.approx(ledoit_wolf_shrinkage(centred, assume_centered=True))
    assert h_score(good * 7.0, labels) == pytest.approx(h_score(good, labels))  # scale-free


def test_leep_and_nce_equal_hand_computed_values() -> None:
    theta = np.array([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9]])  # source probabilities of 3 items over 2 source classes
    y = np.array([0, 0, 1])
    # joint P(y, z) = [[1.4, 0.6], [0.1, 0.9]] / 3; P(y | z) = [[14/15, 2/5], [1/15, 3/5]]
    eep = [0.8 * 14 / 15 + 0.2 * 2 / 5, 0.6 * 14 / 15 + 0.4 * 2 / 5, 0.1 * 1 / 15 + 0.9 * 3 / 5]
    assert leep(theta, y) == pytest.approx(np.mean(np.log(eep)))
    # hard source labels z = [0, 0, 1] decide y: no uncertainty left; z = [0, 0, 0]: H(Y) = H(2/3, 1/3)
    assert nce(np.array([0, 0, 1]), y) == pytest.approx(0.0)
    assert nce(np.array([0, 0, 0]), y) == pytest.approx(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))
    proba = source_probabilities(np.array([[1.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 0.0]]), np.array([0.0, 1.0]))
    assert proba[0] == pytest.approx(np.exp([2.0, 1.0]) / np.exp([2.0, 1.0]).sum())


def test_cross_validated_accuracies_tell_signal_from_noise() -> None:
    labels, good, noise = features_pair(90, 40, shift=4.0)
    folds = stratified_folds(labels, fold_count(labels))
    assert sorted(np.bincount(folds)) == [18] * 5 and all(len(np.unique(labels[folds == f])) == 3 for f in range(5))
    assert knn_accuracy(good, labels, folds) > 0.9 and knn_accuracy(noise, labels, folds) < 0.6
    assert probe_accuracy(good, labels, folds) > 0.8 and probe_accuracy(noise, labels, folds) < 0.6
    assert fold_count(np.array([0, 0, 1, 1, 1])) == 2


def test_recommendation_rules() -> None:
    rows = [Candidate("a", 0.80, -0.50, 300, 0.7), Candidate("b", 0.81, -0.60, 300, 0.7),
            Candidate("c", 0.60, -0.10, 300, 0.7)]
    choice = recommend(rows, per_class=10)
    assert choice.backbone == "a" and choice.strategy == "linear-probe"  # a and b tie within an error: LogME decides
    assert "a: " in choice.reason and "10 labelled" in choice.reason
    assert choose_strategy(600, 0.8, gap=0.5)[0] == "finetune"
    assert choose_strategy(200, 0.8, gap=0.5)[0] == "gradual"
    assert choose_strategy(200, 0.8, gap=0.1)[0] == "gradual"
    assert choose_strategy(50, 0.9, gap=0.1)[0] == "linear-probe"
    assert choose_strategy(50, 0.9, gap=0.6)[0] == "gradual"
    assert choose_strategy(500, 0.99, gap=None)[0] == "linear-probe"  # saturated


def test_rank_command_on_a_tiny_folder_then_from_the_cache_without_torch(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "data", {"train": 6, "val": 3})
    env = {**os.environ, "TRANSFERKIT_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "transferkit", "rank", str(data), "--backbones", "efficientnet_lite0",
               "--image-sizes", "32,48", *SMALL[2:], "--json"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["items"] == 18 and result["per_class"] == {"blue": 9, "red": 9} and result["folds"] == 5
    assert [row["label"] for row in result["rows"]] == ["efficientnet_lite0 @32", "efficientnet_lite0 @48"]
    for row in result["rows"]:
        assert row["features"]["extracted"] == 18 and row["source_head"]["classes"] == 1000
        assert set(row["scores"]) == {"logme", "h_score", "nce", "leep", "knn_accuracy", "probe_accuracy"}
        assert all(np.isfinite(s["value"]) and s["seconds"] >= 0 for s in row["scores"].values())
        assert row["scores"]["probe_accuracy"]["value"] >= 0.9  # red against blue
    assert sum(row["recommended"] for row in result["rows"]) == 1
    assert result["recommendation"]["strategy"] == "linear-probe"  # 9 per class: too few to train the backbone
    # the second ranking reads features and the source classifier from the cache: no torch import
    script = ("import sys\nfrom transferkit.cli import main\nsys.argv = ['transferkit', *sys.argv[1:]]\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\nprint('torch loaded' if 'torch' in sys.modules else '')")
    second = subprocess.run([sys.executable, "-c", script, *command[3:-1]], capture_output=True, text=True, env=env,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    assert "torch loaded" not in second.stdout and "* recommended:" in second.stdout, second.stdout
    assert "efficientnet_lite0" in second.stdout and "cached" in second.stdout


@pytest.mark.parametrize("args, message", [
    (["--backbones", "efficientnet_lite0,efficientnet_lite0"], "names 'efficientnet_lite0' more than once"),
    (["--backbones", "efficientnet_lite0,"], "expected comma-separated backbone names"),
    (["--backbones", "no_such_net"], "no_such_net"),
    (["--image-sizes", "8"], "expected comma-separated integers >= 16"),
    (["--image-sizes", "32,32"], "a size is named twice"),
    (["--folds", "1"], "at least 2 folds"),
])
def test_bad_options_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                  args: list[str], message: str) -> None:
    data = make_folder(tmp_path / "data", {"": 2})
    code, _, err = run_main(monkeypatch, capsys, "rank", str(data), *args)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_bad_data_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_main(monkeypatch, capsys, "rank", str(tmp_path / "missing"))
    assert code == 2 and "not found" in err and err.count("\n") == 1, err
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(monkeypatch, capsys, "rank", str(tmp_path / "empty"), *SMALL)
    assert code == 2 and err.startswith("error: "), err
    lonely = make_folder(tmp_path / "lonely", {"": 2})
    (lonely / "red" / "img_1.png").unlink()
    code, _, err = run_main(monkeypatch, capsys, "rank", str(lonely), *SMALL)
    assert code == 2 and "class 'red' has 1 readable item(s)" in err.splitlines()[-1], err
    table = tmp_path / "texts.csv"
    table.write_text("text,label\ngood film,pos\nbad film,neg\nfine film,pos\nawful film,neg\n")
    code, _, err = run_main(monkeypatch, capsys, "rank", str(table), "--image-sizes", "64")
    assert code == 2 and "takes no input size" in err, err


def test_rank_text_encoder_has_no_source_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    table = tmp_path / "reviews.csv"
    rows = [f"a wonderful and moving film {i},pos" for i in range(6)] + [f"a dull and boring mess {i},neg" for i in range(6)]
    table.write_text("text,label\n" + "\n".join(rows) + "\n")
    # named: with the mpnet extra installed, the default candidates are two
    code, out, err = run_main(monkeypatch, capsys, "rank", str(table), "--backbones", "all-MiniLM-L6-v2", "--engine",
                              "torch", "--json")
    assert code == 0, err
    result = json.loads(out)
    (row,) = result["rows"]
    assert row["backbone"] == "all-MiniLM-L6-v2" and row["image_size"] is None
    assert row["scores"]["nce"] is None and row["scores"]["leep"] is None and row["source_head"]["confidence"] is None
    assert row["scores"]["probe_accuracy"]["value"] >= 0.9 and np.isfinite(row["scores"]["logme"]["value"])
    assert "no source classifier" in result["recommendation"]["reason"]
