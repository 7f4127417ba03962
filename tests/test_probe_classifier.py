import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import FAST
from transferkit import ImageClassifier, RunConfig
from transferkit.cli import app
from transferkit.errors import RunDirError, TransferkitError
from transferkit.heads.probe import fit_probe


def test_probe_picks_l2_on_validation_and_folds_standardisation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 20)) * rng.uniform(0.1, 10, size=20) + 5
    y = (x[:, 0] / 10 + x[:, 1] > 5).astype(int)
    head = fit_probe(x[:150], y[:150], 2, x[150:], y[150:])
    assert len(head.path) > 3 and head.l2 in [p["l2"] for p in head.path]
    best = max(p["val_accuracy"] for p in head.path)
    assert (head.predict_proba(x[150:]).argmax(1) == y[150:]).mean() == pytest.approx(best)
    assert best > 0.9


def test_probe_on_correlated_features_matches_scikit_learn():
    # Four noisy copies of a low-rank signal (like several layers of one encoder): the principal-axis,
    # preconditioned solve must reach the same optimum as scikit-learn's L-BFGS on the plain problem.
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    signal = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 30))
    x = np.concatenate([signal + rng.normal(scale=s, size=signal.shape) for s in (0.05, 0.1, 0.2, 0.4)], axis=1)
    y = np.digitize(signal[:, 0] + 0.5 * signal[:, 1], [-1.0, 1.0])
    l2 = 0.01
    # within the solver's tolerance (~3e-3 on rows it never saw); an L2 off by 2x differs by 0.07
    for rows in (300, 60):  # more rows than features (eigen-axes), fewer (the rows' span, thin SVD)
        head = fit_probe(x[:rows], y[:rows], 3, l2=l2, standardize=False)
        centre, scale = x[:rows].mean(axis=0), np.sqrt(x[:rows].var(axis=0).mean())
        reference = LogisticRegression(C=1 / (l2 * rows), tol=1e-10, max_iter=10_000).fit((x[:rows] - centre) / scale,
                                                                                         y[:rows])
        assert np.abs(head.predict_proba(x) - reference.predict_proba((x - centre) / scale)).max() < 5e-3


def test_class_weights_shift_decisions_towards_rare_class():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (190, 2)), rng.normal(1.0, 1, (10, 2))])
    y = np.array([0] * 190 + [1] * 10)
    plain = fit_probe(x, y, 2, l2=1e-3).predict_proba(x).argmax(1).sum()
    weighted = fit_probe(x, y, 2, l2=1e-3, class_weight="auto").predict_proba(x).argmax(1).sum()
    assert weighted > plain


def test_fit_predict_save_load_round_trip(tiny_folder: Path, tmp_path: Path):
    clf = ImageClassifier(**FAST).fit(tiny_folder)
    assert clf.metrics_["val"]["accuracy"] == 1.0
    val = tiny_folder / "val"
    proba = clf.predict_proba(val)
    clf.save(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(
        ["config.yaml", "classes.json", "preprocessing.json", "model.safetensors", "metrics.json"])
    loaded = ImageClassifier.load(tmp_path / "run")
    np.testing.assert_array_equal(loaded.predict_proba(val), proba)
    assert loaded.predict([val / "red" / "img_0.png"]) == ["red"]
    assert loaded.score(val) == 1.0


def test_saved_model_is_one_module_that_reproduces_predictions(tiny_folder: Path, tmp_path: Path):
    """The full torch module (normalisation + backbone + head) rebuilt from model.safetensors agrees."""
    import torch
    from safetensors.torch import load_file

    from transferkit.modalities.image.backbones import resolve_backbone
    from transferkit.modalities.image.model import ImageModel
    from transferkit.modalities.image.pipeline import decode_batches

    clf = ImageClassifier(**FAST).fit(tiny_folder)
    clf.save(tmp_path / "run")
    spec = resolve_backbone("efficientnet_lite0", pretrained=False, input_size=64)
    model = ImageModel(spec.build(), spec.preprocessing, 1280, 2)
    model.load_state_dict(load_file(str(tmp_path / "run" / "model.safetensors")))
    files = sorted(str(p) for p in (tiny_folder / "val").rglob("*.png"))
    batch = next(decode_batches(files, spec.preprocessing, 64))
    with torch.inference_mode():
        torch_proba = model.eval()(torch.from_numpy(batch.images)).softmax(1).numpy()
    np.testing.assert_allclose(torch_proba, clf.predict_proba(files), atol=1e-3)


def test_existing_run_is_never_overwritten(tiny_folder: Path, tmp_path: Path):
    clf = ImageClassifier(**FAST).fit(tiny_folder)
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for overwrite in (False, True):  # a folder of the user's own files is never replaced, even when asked
        with pytest.raises(RunDirError, match="not a transferkit run"):
            clf.save(out, overwrite=overwrite)
    assert (out / "notes.txt").read_text() == "mine"
    run = tmp_path / "run2"
    clf.save(run)
    with pytest.raises(RunDirError, match=r"overwrite=True"):  # the API names its own argument
        clf.save(run)
    clf.save(run, overwrite=True)
    assert (run / "model.safetensors").exists()


def test_config_round_trips_and_rejects_unknown_fields(tmp_path: Path):
    config = RunConfig(data="d", l2=0.5, image_size=96)
    config.to_yaml(tmp_path / "c.yaml")
    assert RunConfig.from_yaml(tmp_path / "c.yaml") == config
    (tmp_path / "bad.yaml").write_text("data: d\nlearning_rat: 1\n")
    with pytest.raises(TransferkitError, match="learning_rat"):
        RunConfig.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(TransferkitError, match="val_fraction"):
        RunConfig(val_fraction=1.5)


runner = CliRunner()


def test_cli_train_evaluate_predict(tiny_folder: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(tiny_folder), "--out", str(out), "--image-size", "64"])
    assert result.exit_code == 0, result.output
    assert "val: accuracy 1.0000" in result.output

    again = runner.invoke(app, ["train", str(tiny_folder), "--out", str(out), "--image-size", "64"])
    assert again.exit_code != 0 and "--overwrite" in str(again.exception)

    report = runner.invoke(app, ["evaluate", str(out), str(tiny_folder / "val"), "--json"])
    payload = json.loads(report.stdout)
    assert payload["accuracy"] == 1.0 and set(payload["per_class"]) == {"red", "blue"}
    assert "macro_f1" in payload and payload["confusion_matrix"] == [[4, 0], [0, 4]]

    table = runner.invoke(app, ["evaluate", str(out), str(tiny_folder / "val")])
    assert "confusion matrix" in table.output and "precision" in table.output

    predicted = runner.invoke(app, ["predict", str(out), str(tiny_folder / "val" / "blue"), "--top-k", "2", "--json"])
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert len(lines) == 4 and all(line["predictions"][0]["label"] == "blue" for line in lines)
    assert len(lines[0]["predictions"]) == 2


def test_cli_rerun_from_saved_config_reproduces(tiny_folder: Path, tmp_path: Path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert runner.invoke(app, ["train", str(tiny_folder), "--out", str(first), "--image-size", "64"]).exit_code == 0
    result = runner.invoke(app, ["train", "--config", str(first / "config.yaml"), "--out", str(second)])
    assert result.exit_code == 0, result.output
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (first, second))
    assert a["val"] == b["val"] and a["probe"]["l2"] == b["probe"]["l2"]


def test_cli_errors_are_one_line(tmp_path: Path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "transferkit", "train", str(tmp_path / "missing"), "--out",
                             str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_text_only_settings_are_refused_for_images(tiny_folder: Path):
    with pytest.raises(TransferkitError, match="feature_layers 4: image backbones"):
        ImageClassifier(feature_layers=4).fit(tiny_folder)


def test_cli_backbones_lists_packaged():
    result = runner.invoke(app, ["backbones", "--json"])
    names = [row["name"] for row in json.loads(result.stdout)]
    assert "efficientnet_lite0" in names and "timm:<arch>" in names


def test_metrics_match_scikit_learn():
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    from transferkit.metrics import classification_metrics

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 300)
    proba = rng.dirichlet(np.ones(4), 300)
    proba[labels == 3] = [0.9, 0.05, 0.03, 0.02]  # class 3 never predicted: zero-division path
    report = classification_metrics(labels, proba, ["a", "b", "c", "d"])
    predicted = proba.argmax(1)
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, labels=range(4), zero_division=0)
    assert report["confusion_matrix"] == confusion_matrix(labels, predicted, labels=range(4)).tolist()
    assert [report["per_class"][c]["f1"] for c in "abcd"] == pytest.approx(f1)
    assert [report["per_class"][c]["precision"] for c in "abcd"] == pytest.approx(precision)
    assert report["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro", zero_division=0))


def test_a_probe_reports_its_one_off_export_apart(tiny_folder: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "fresh-cache"))  # no engine yet: this fit exports
    first = ImageClassifier(**FAST).fit(tiny_folder)
    assert first.metrics_["export_seconds"] > 0
    again = ImageClassifier(**FAST, cache=False).fit(tiny_folder)  # engine cached now; features recomputed
    assert "export_seconds" not in again.metrics_
    assert again.metrics_["train_seconds"] < first.metrics_["train_seconds"] + first.metrics_["export_seconds"]
