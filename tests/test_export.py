"""``transferkit export``: the whole model as ONNX and TorchScript, checked against the run's own torch model on
its validation data (images and text), the files beside it, and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import make_folder, run_main
from tokenizers import Tokenizer
from test_text import sentiment_rows, write_csv

from transferkit import ImageClassifier, TextClassifier
from transferkit.errors import DataError
from transferkit.export.exporter import TOLERANCE, export_run
from transferkit.modalities.image.images import load_rgb
from transferkit.modalities.image.preprocessing import Preprocessing


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Path:
    root = make_folder(tmp_path_factory.mktemp("images") / "data", {"train": 6, "val": 3})
    clf = ImageClassifier(image_size=32, cache_dir=str(session_cache)).fit(str(root))
    return clf.save(root.parent / "run")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Path:
    folder = tmp_path_factory.mktemp("texts")
    data = write_csv(folder / "reviews.csv", sentiment_rows())
    clf = TextClassifier(max_length=32, val_fraction=0.34, cache_dir=str(session_cache)).fit(str(data))
    return clf.save(folder / "run")


def check_parity(out: Path, items: int) -> dict:
    parity = json.loads((out / "parity.json").read_text())
    assert parity["ok"] and parity["max_abs_diff"] <= TOLERANCE, parity
    assert parity["top1_agreement"] == 1.0 and parity["items"] == items and parity["unreadable"] == 0
    assert parity["accuracy"]["torch"] == parity["accuracy"]["export"]
    return parity


def test_onnx_export_of_an_image_run_is_the_whole_model(image_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "export"
    code, stdout, err = run_main(monkeypatch, capsys, "export", image_run, "--format", "onnx", "--out", out)
    assert code == 0, err
    assert "top-1 agreement 100.0%" in stdout and "ok;" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["classes.json", "model.onnx", "parity.json", "preprocessing.json"]
    check_parity(out, items=6)
    assert json.loads((out / "classes.json").read_text()) == ["blue", "red"]
    contract = json.loads((out / "preprocessing.json").read_text())
    assert contract["input_size"] == 32 and contract["inputs"][0]["dtype"] == "uint8"
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (images,) = session.get_inputs()
    assert images.name == "images" and images.shape == ["batch", 32, 32, 3]  # dynamic batch
    # the exported model on the raw decoded crop (no normalisation outside it) predicts as the run does
    files = sorted((image_run.parent / "data" / "val").rglob("*.png"))
    pre = Preprocessing.from_dict(contract)
    batch = np.stack([pre.resize_and_crop(load_rgb(f)) for f in files])
    proba = session.run(["probabilities"], {"images": batch})[0]
    expected = ImageClassifier.load(image_run).predict_proba([str(f) for f in files])
    assert proba.shape == (6, 2) and np.abs(proba - expected).max() < 1e-4
    assert session.run(None, {"images": batch[:1]})[0].shape == (1, 2)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_replaces_an_earlier_export_only_with_overwrite(image_run: Path, tmp_path: Path,
                                                                          monkeypatch, capsys) -> None:
    out = tmp_path / "ts"
    out.mkdir()
    for name in ("model.onnx", "parity.json", "classes.json"):  # an earlier export
        (out / name).write_text("{}")
    code, _, err = run_main(monkeypatch, capsys, "export", image_run, "--format", "torchscript", "--out", out)
    assert code == 2 and "already holds an export; pass --overwrite" in err
    result = export_run(image_run, "torchscript", out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["classes.json", "model.pt", "parity.json", "preprocessing.json"]
    check_parity(result.folder, items=6)
    model = torch.jit.load(str(result.model))
    proba = model(torch.zeros((3, 32, 32, 3), dtype=torch.uint8))
    assert proba.shape == (3, 2) and torch.allclose(proba.sum(1), torch.ones(3))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_text_export_takes_any_sequence_length_and_carries_its_tokenizer(text_run: Path, tmp_path: Path,
                                                                        fmt: str) -> None:
    result = export_run(text_run, fmt, tmp_path / fmt)
    check_parity(result.folder, items=8)
    assert (result.folder / "tokenizer" / "tokenizer.json").is_file()
    contract = json.loads((result.folder / "preprocessing.json").read_text())
    assert [i["name"] for i in contract["inputs"]] == ["input_ids", "attention_mask"]
    if fmt != "onnx":
        return
    tokenizer = Tokenizer.from_file(str(result.folder / "tokenizer" / "tokenizer.json"))
    tokenizer.no_padding()
    texts = ["a wonderful, moving film that I loved from the first minute to the last", "dull"]
    ids = [e.ids[:contract["max_length"]] for e in tokenizer.encode_batch(texts)]
    width = max(map(len, ids))
    input_ids = np.array([x + [contract["pad_token_id"]] * (width - len(x)) for x in ids], dtype=np.int64)
    mask = np.array([[1] * len(x) + [0] * (width - len(x)) for x in ids], dtype=np.int64)
    session = ort.InferenceSession(str(result.model), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", "sequence"]
    proba = session.run(["probabilities"], {"input_ids": input_ids, "attention_mask": mask})[0]
    expected = TextClassifier.load(text_run).predict_proba(texts, text=True)
    assert np.abs(proba - expected).max() < 1e-4


def test_bad_exports_are_one_line_errors(image_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    def error(*args: object) -> str:
        code, _, err = run_main(monkeypatch, capsys, "export", *args)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        return err

    assert "choose onnx or torchscript" in error(image_run, "--format", "tflite", "--out", tmp_path / "x")
    assert "outside the run" in error(image_run, "--out", image_run / "export")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    assert "never replaced" in error(image_run, "--out", tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    assert "not found" in error(tmp_path / "nowhere", "--out", tmp_path / "y")


def test_a_run_whose_data_moved_is_checked_on_data_given(image_run: Path, tmp_path: Path,
                                                         session_cache: Path) -> None:
    data = make_folder(tmp_path / "gone", {"train": 3, "val": 2})
    run = ImageClassifier(image_size=32, cache_dir=str(session_cache)).fit(str(data)).save(tmp_path / "run")
    other = shutil.copytree(data / "val", tmp_path / "kept")
    shutil.rmtree(data)
    with pytest.raises(DataError, match="is not on this machine.*pass data="):
        export_run(run, "torchscript", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    result = export_run(run, "torchscript", tmp_path / "out", data=other)
    assert check_parity(result.folder, items=4)["data"] == str(other)
