"""One TransferClassifier core for every modality: the same evaluate / predict_records shapes for image and text
runs, dispatch by data and by run format, saved configs that re-run from any directory, and a modality
written in this file plugging in without a change to the core.

Image and text runs are the v1 fixtures (tests/fixtures/v1): loading them needs no training.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import make_folder
from transferkit.config import RunConfig
from transferkit.errors import DataError, RunDirError, TransferkitError
from transferkit.estimators import (ImageClassifier, TextClassifier, TransferClassifier, classifier_class,
                                    classifier_for_data, load_classifier)
from transferkit.modalities import TEXT
from transferkit.modalities.base import Featurized, LabelledData, Split
from transferkit.strategies import parse_strategy

V1 = Path(__file__).resolve().parent / "fixtures" / "v1"
EXPECTED = json.loads((V1 / "expected.json").read_text())


def v1_run(name: str, tmp_path: Path) -> Path:
    target = tmp_path / "runs" / name
    shutil.copytree(V1 / name, target)
    return target


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("text", "label"))
        writer.writerows(rows)
    return path


def test_the_classifiers_are_one_core() -> None:
    for name in ("fit", "predict", "predict_proba", "predict_records", "evaluate", "score", "save"):
        assert getattr(ImageClassifier, name) is getattr(TransferClassifier, name), name
        assert getattr(TextClassifier, name) is getattr(TransferClassifier, name), name
    assert ImageClassifier.load.__func__ is TransferClassifier.load.__func__
    assert TextClassifier.load.__func__ is TransferClassifier.load.__func__


def test_both_modalities_implement_the_whole_protocol() -> None:
    import inspect

    from transferkit.modalities import MODALITIES
    from transferkit.modalities.base import Modality

    methods = [n for n in dir(Modality) if not n.startswith("_")]
    for modality in MODALITIES:
        assert all(hasattr(modality, n) for n in Modality.__annotations__), modality
        for name in methods:
            ours, theirs = inspect.signature(getattr(Modality, name)), inspect.signature(getattr(modality, name))
            assert list(ours.parameters)[1:] == list(theirs.parameters), (modality, name)


def test_evaluate_has_one_shape_for_images_and_texts(tmp_path: Path) -> None:
    image = load_classifier(v1_run("image_probe", tmp_path))
    folder = tmp_path / "labelled"
    shutil.copytree(V1 / "inputs" / "images", folder)
    shutil.copy(folder / "red" / "img_0.png", folder / "blue" / "red_in_blue.png")  # certainly misclassified
    (folder / "red" / "broken.png").write_bytes(b"not an image")
    report = image.evaluate(folder)
    assert report["n"] == 7 and report["accuracy"] == pytest.approx(6 / 7)
    (wrong,) = report["misclassified"]
    assert Path(wrong["item"]).name == "red_in_blue.png" and wrong["path"] == wrong["item"]
    assert (wrong["label"], wrong["predicted"]) == ("blue", "red") and 0.5 < wrong["probability"] <= 1
    (skipped,) = report["skipped"]
    assert Path(skipped["item"]).name == "broken.png" and skipped["reason"]

    text = load_classifier(v1_run("text_probe", tmp_path))
    predicted = [EXPECTED["runs"]["text_probe"]["classes"][int(np.argmax(p))]
                 for p in EXPECTED["runs"]["text_probe"]["proba"]]
    flipped = {"pos": "neg", "neg": "pos"}
    rows = [(t, flipped[p] if i == 0 else p) for i, (t, p) in enumerate(zip(EXPECTED["text_inputs"], predicted))]
    rows.insert(2, ("", "pos"))
    report = text.evaluate(write_rows(tmp_path / "test.csv", rows))
    assert report["n"] == 5 and report["accuracy"] == pytest.approx(4 / 5)
    (wrong,) = report["misclassified"]
    assert wrong["item"] == wrong["text"] == EXPECTED["text_inputs"][0] and wrong["line"] == 2
    assert (wrong["label"], wrong["predicted"]) == (flipped[predicted[0]], predicted[0])
    assert report["skipped"] == [{"line": 4, "reason": "empty text in column 'text'"}]
    common = {"item", "label", "predicted", "probability"}
    assert common <= set(wrong) and common <= set(report["misclassified"][0])


def test_predict_records_one_per_item(tmp_path: Path) -> None:
    image = load_classifier(v1_run("image_probe", tmp_path))
    image.verbose = False
    folder = tmp_path / "images"
    shutil.copytree(V1 / "inputs" / "images", folder)
    (folder / "red" / "broken.png").write_bytes(b"not an image")
    records = image.predict_records([str(folder)], top_k=2)
    assert len(records) == 7
    broken = [r for r in records if "error" in r]
    assert [Path(r["input"]).name for r in broken] == ["broken.png"] and "predictions" not in broken[0]
    good = [r for r in records if "error" not in r]
    assert all(len(r["predictions"]) == 2 and r["path"] == r["input"] for r in good)
    assert [r["predictions"][0]["label"] for r in good] == ["blue"] * 3 + ["red"] * 3

    text = load_classifier(v1_run("text_probe", tmp_path))
    text.verbose = False
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in EXPECTED["text_inputs"][:2]))
    records = text.predict_records([str(data), "an ordinary film"], top_k=5)
    assert [(r.get("file"), r.get("line")) for r in records] == [(str(data), 1), (str(data), 2), (None, None)]
    assert [r["input"] for r in records] == [*EXPECTED["text_inputs"][:2], "an ordinary film"]
    assert all(r["text"] == r["input"] and len(r["predictions"]) == 2 for r in records)  # top-k <= classes
    proba = EXPECTED["runs"]["text_probe"]["proba"]
    assert records[2]["predictions"][0]["probability"] == pytest.approx(max(proba[4]), abs=1e-5)


def test_dispatch_by_data_and_by_run_format(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "data", {"": 2})
    assert classifier_for_data(folder) is ImageClassifier and classifier_for_data(str(folder)) is ImageClassifier
    assert classifier_for_data("reviews.csv") is TextClassifier  # read (and checked) by fit
    assert classifier_for_data(["a text", "another"]) is TextClassifier
    with pytest.raises(DataError, match="missing: not found; pass an image folder"):
        classifier_for_data(tmp_path / "missing")
    assert type(load_classifier(v1_run("image_gradual", tmp_path))) is ImageClassifier
    text_run = v1_run("text_probe", tmp_path)
    assert type(load_classifier(text_run)) is TextClassifier
    with pytest.raises(RunDirError, match="ImageClassifier does not read.*load_classifier"):
        ImageClassifier.load(text_run)
    with pytest.raises(RunDirError, match="not a complete run"):
        load_classifier(folder)


def test_modalities_refuse_what_they_have_no_use_for() -> None:
    with pytest.raises(TransferkitError, match="'last-k:2' is for image backbones"):
        TextClassifier(strategy="last-k:2").fit(["good", "bad"], labels=["pos", "neg"])
    with pytest.raises(TransferkitError, match="'last-k:1' is for image backbones"):
        TEXT.check(RunConfig(strategy="last-k:1"), parse_strategy("last-k:1"))


def random_weights(path: Path) -> Path:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(timm.create_model("test_efficientnet", num_classes=0).state_dict(), str(path))
    return path


def test_saved_config_has_absolute_paths_and_reruns_from_another_directory(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    make_folder(work / "data", {"train": 4, "val": 2})
    random_weights(work / "w.safetensors")
    monkeypatch.chdir(work)
    clf = ImageClassifier(backbone="timm:test_efficientnet", weights="w.safetensors", cache_dir="cache",
                          image_size=32, l2=1.0)
    clf.verbose = False
    clf.fit("data").save("run")
    saved = yaml.safe_load((work / "run" / "config.yaml").read_text())
    resolved = work.resolve()
    assert (saved["data"], saved["weights"], saved["cache_dir"]) == (
        str(resolved / "data"), str(resolved / "w.safetensors"), str(resolved / "cache"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-m", "transferkit", "train", "--config", str(work / "run" / "config.yaml"),
                           "--out", "again", "--json"], capture_output=True, text=True, cwd=elsewhere,
                          env=dict(os.environ), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    again = json.loads((elsewhere / "again" / "metrics.json").read_text())
    assert again["val"] == clf.metrics_["val"] and again["probe"]["l2"] == clf.metrics_["probe"]["l2"]


# -- a modality written here: items are numbers separated by spaces, features the numbers themselves ----------
@dataclass(frozen=True)
class NumbersSpec:
    name: str = "identity"
    source: str = "test"
    fingerprint: str = "numbers"

    def pinned(self, fingerprint: str) -> "NumbersSpec":
        return NumbersSpec(self.name, self.source, fingerprint)


class NumbersModality:
    name, default_backbone, run_format, run_files = "numbers", "identity", "test-numbers-1", ()
    item_key, skipped_key, data_hint = "numbers", "skipped_numbers", "(items, labels)"

    def accepts(self, data):
        return isinstance(data, tuple)

    def check(self, config, strategy):
        if not strategy.frozen_backbone:
            raise TransferkitError("numbers are features already: linear-probe only")

    def read_labelled(self, data, labels, classes, config):
        items, names = data
        return Split(list(items), [classes.index(n) for n in names]), []

    def read_training(self, data, labels, val_data, config):
        classes = sorted(set(data[1]))
        return LabelledData(classes, self.read_labelled(data, None, classes, config)[0], Split())

    def predict_inputs(self, inputs, config, text=False):
        return [{"input": item} for item in inputs]

    def resolve(self, config, strategy):
        return NumbersSpec()

    def featurize(self, spec, items, config, build_net, show_progress, calibrate_on=None):
        parsed = []
        for item in items:
            try:
                parsed.append([float(x) for x in item.split()])
            except ValueError as exc:
                parsed.append(str(exc))
        rows = [p for p in parsed if isinstance(p, list)]
        failed = [(item, p) for item, p in zip(items, parsed) if isinstance(p, str)]
        ok = np.array([isinstance(p, list) for p in parsed], dtype=bool)
        return Featurized(np.asarray(rows, np.float32).reshape(len(rows), -1), ok, failed, {"extracted": len(rows)})

    def run_details(self, spec, config):
        return {}


def test_a_new_modality_plugs_in_without_a_change_to_the_core() -> None:
    cls = classifier_class(NumbersModality())
    assert issubclass(cls, TransferClassifier) and cls.__name__ == "NumbersClassifier"
    items = [f"{x} {1 - x}" for x in (0.0, 0.1, 0.2, 0.8, 0.9, 1.0)]
    clf = cls(l2=1e-3).fit((items, ["low"] * 3 + ["high"] * 3))
    assert clf.classes_ == ["high", "low"] and clf.metrics_["skipped_numbers"] == []
    records = clf.predict_records(["0.05 0.95", "one two"])
    assert records[0]["predictions"][0]["label"] == "low" and records[0]["numbers"] == "0.05 0.95"
    assert records[1]["input"] == "one two" and "could not convert" in records[1]["error"]
    report = clf.evaluate((["0.95 0.05", "0.1 0.9", "?"], ["low", "low", "high"]))
    assert report["n"] == 2 and [r["item"] for r in report["misclassified"]] == ["0.95 0.05"]
    assert report["skipped"][0]["item"] == "?"
    with pytest.raises(TransferkitError, match="linear-probe only"):
        cls(strategy="finetune").fit((items, ["low"] * 6))


def test_featurized_part_keeps_rows_and_failures_of_each_split() -> None:
    ok = np.array([True, False, True, True, False, True])
    result = Featurized(np.arange(8, dtype=np.float32).reshape(4, 2), ok, [("b", "bad"), ("e", "worse")])
    first, second = result.part(0, 3), result.part(3, 6)
    assert first.features.tolist() == [[0, 1], [2, 3]] and first.failed == [("b", "bad")]
    assert second.features.tolist() == [[4, 5], [6, 7]] and second.failed == [("e", "worse")]
    assert second.ok.tolist() == [True, False, True]
