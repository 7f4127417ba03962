"""Every file of a run folder is untrusted input (issue 23, section 2): the checks the CLI corpus cannot reach
(the Python API's adapter files, the content fingerprint itself, a prune callback's database)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from transferkit.config import RunConfig
from transferkit.errors import TransferkitError
from transferkit.runs.integrity import content_fingerprint
from transferkit.runs.rundir import read_run, write_run

PREPROCESSING = {"input_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear", "crop_pct": 0.875}


def small_run(path: Path, backbone: float = 0.0, head: float = 0.0) -> Path:
    tensors = {"features.backbone.w": np.full((4, 3), backbone, np.float32),
               "head.weight": np.full((2, 4), head, np.float32), "head.bias": np.zeros(2, np.float32)}
    return write_run(path, config=RunConfig(), classes=["blue", "red"], preprocessing=PREPROCESSING, tensors=tensors,
                     model_meta={"format": "transferkit-image-1", "fingerprint": "claimed", "arch": "a",
                                 "num_classes": "2", "num_features": "4"}, metrics={})


def fingerprint(run: Path) -> str:
    files = read_run(run)
    return content_fingerprint(files.model_path, files.model_meta, files.preprocessing, (run / "engine.onnx",))


def test_the_content_fingerprint_covers_what_decides_the_features_and_not_the_head(tmp_path: Path) -> None:
    base = fingerprint(small_run(tmp_path / "a"))
    assert fingerprint(small_run(tmp_path / "other-head", head=1.0)) == base  # probes on one backbone share it
    assert fingerprint(small_run(tmp_path / "other-weights", backbone=1.0)) != base  # same claimed fingerprint
    nearest = small_run(tmp_path / "nearest")
    preprocessing = json.loads((nearest / "preprocessing.json").read_text())
    (nearest / "preprocessing.json").write_text(json.dumps({**preprocessing, "interpolation": "nearest"}))
    assert fingerprint(nearest) != base
    engine = small_run(tmp_path / "engine")
    (engine / "engine.onnx").write_bytes(b"graph")
    assert fingerprint(engine) != base


def test_a_runs_stored_cache_dir_is_never_used(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    run = small_run(tmp_path / "run")
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("cache_dir: null",
                                                                               f"cache_dir: {victim}"))
    assert read_run(run).config.cache_dir is None


@pytest.mark.parametrize("field, value, says", [
    ("confusion_matrix", [[1, 0], [1]], "confusion_matrix"), ("accuracy", "high", "accuracy"),
    ("n", -1, "n is -1"), ("per_class", {"red": "good"}, "per_class")])
def test_metrics_scores_are_checked(tmp_path: Path, field: str, value: object, says: str) -> None:
    run = small_run(tmp_path / "run")
    (run / "metrics.json").write_text(json.dumps({"val": {"n": 2, field: value}}))
    with pytest.raises(TransferkitError, match=f"damaged run file .*metrics.json: .*{says}"):
        read_run(run)


def test_a_large_run_file_is_refused_unread(tmp_path: Path) -> None:
    run = small_run(tmp_path / "run")
    (run / "classes.json").write_text(json.dumps(["x" * 100] * 20_000))  # 2 MB
    with pytest.raises(TransferkitError, match="classes.json: is larger than"):
        read_run(run)


# -- adapter.json --------------------------------------------------------------------------------------------
def lora_folder(tmp_path: Path) -> tuple[Path, object]:
    """A run's adapter.safetensors / adapter.json (LoRA, rank 4, on Lite0's pointwise convolutions)."""
    torch = pytest.importorskip("torch")
    from transferkit.methods.peft_adapters import LoraAdapter
    from transferkit.modalities import IMAGE
    from transferkit.modalities.image.backbones import resolve_backbone

    def model():
        torch.manual_seed(0)
        return IMAGE.build_model(resolve_backbone("efficientnet_lite0", input_size=32), 2)

    adapter = LoraAdapter(r=4)
    folder = tmp_path / "run"
    folder.mkdir()
    for name, data in adapter.saved(adapter.attach(model())).files().items():
        (folder / name).write_bytes(data)
    return folder, model


@pytest.mark.parametrize("change, says", [
    ({"r": 8}, "adapter.json: disagrees with adapter.safetensors .*rank 4"),
    ({"r": 100000}, "adapter.json: .*r=100000: expected an integer in \\[1, 1024\\]"),
    ({"speed": 3}, "adapter.json: .*adapter lora: no option 'speed'"),
    ({"adapter": "magic"}, "adapter.json: adapter is 'magic', expected one of"),
    ({"alpha": [1, 2]}, "adapter.json: .*alpha=\\[1, 2\\]: expected a number"),
    ({"target_modules": "conv"}, "adapter.json: target_modules is not a list")])
def test_adapter_json_is_checked_before_anything_is_allocated(tmp_path: Path, change: dict, says: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from transferkit.methods.peft_adapters import LoraAdapter
    from transferkit.train.adapters import apply_adapter_file

    folder, model = lora_folder(tmp_path)
    apply_adapter_file(model(), folder)  # as saved: it applies
    config = json.loads((folder / "adapter.json").read_text())
    (folder / "adapter.json").write_text(json.dumps({**config, **change}))

    def never(*args: object) -> None:
        raise AssertionError("attached before the files were checked")

    monkeypatch.setattr(LoraAdapter, "attach", never)
    with pytest.raises(TransferkitError, match=f"damaged run file .*{says}"):
        apply_adapter_file(model(), folder)


# -- a stored callback's database ----------------------------------------------------------------------------
def test_a_prune_callback_never_touches_a_database_that_is_not_a_study(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    from transferkit.plugins import CALLBACKS

    mine = tmp_path / "mine.db"
    with sqlite3.connect(mine) as connection:
        connection.execute("CREATE TABLE notes (x)")
    before = mine.read_bytes()
    for url in (f"sqlite:///{mine}", f"sqlite:///{tmp_path / 'absent.db'}"):
        with pytest.raises(TransferkitError, match="not a study database.*left untouched"):
            CALLBACKS.create(f"optuna-prune:storage={url},study=s,trial=0")
    assert mine.read_bytes() == before and not (tmp_path / "absent.db").exists()


def test_a_tampered_copy_cannot_change_the_untouched_runs_answers(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end through the API: the untouched run answers for an image, a copy with another interpolation
    predicts the same pixels under a new name first (its features reach the cache), then the untouched run
    predicts that new name: the same answer as before. The probe's own engine was linked under its content
    fingerprint when it was saved: the untouched run exports nothing."""
    from conftest import make_folder, make_image
    from transferkit import ImageClassifier, load_classifier
    from transferkit.features import engines

    run = ImageClassifier(image_size=32, engine="onnx").fit(str(make_folder(tmp_path / "data", {"": 4})))
    run.save(tmp_path / "run")
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    preprocessing = json.loads((tmp_path / "copy" / "preprocessing.json").read_text())
    (tmp_path / "copy" / "preprocessing.json").write_text(json.dumps({**preprocessing, "interpolation": "nearest"}))
    exports: list[object] = []
    monkeypatch.setattr(engines, "export_onnx", lambda *args: exports.append(args))
    before = load_classifier(tmp_path / "run").predict_proba([str(make_image(tmp_path / "a.png", (120, 40, 200)))])
    assert not exports
    image = str(make_image(tmp_path / "b.png", (120, 40, 200)))  # the same pixels: a new cache entry
    copy = load_classifier(tmp_path / "copy")
    copy.config = copy.config.replace(engine="torch")  # its own network, without an export (the same cache entry)
    tampered = copy.predict_proba([image])
    np.testing.assert_array_equal(load_classifier(tmp_path / "run").predict_proba([image]), before)
    assert not np.array_equal(tampered, before)  # the tampering changed the features: the check could fail
