"""A modality is a package of its own: the toy one in tests/toy_modality (numeric vectors, a small MLP whose
random weights are a file) trains (a probe and a fine-tune), exports to ONNX with parity, serves a request and
renders a report, registered by one line and with no edit to transferkit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from toy_modality import VECTORS
from toy_modality.network import VectorNet
from transferkit.estimators import classifier_for_data, load_classifier
from transferkit.modalities import register_modality, unregister_modality

DIM = 6


@pytest.fixture()
def registered():
    register_modality(VECTORS)  # the one registry line
    yield VECTORS
    unregister_modality(VECTORS.name)


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    rows = []
    for label, centre in (("low", -1.0), ("high", 1.0)):
        for vector in rng.normal(centre, 0.6, (40, DIM)):
            rows.append(label + "," + ",".join(f"{x:.4f}" for x in vector))
    rng.shuffle(rows)
    data = tmp_path / "points.vectors"
    data.write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    weights = tmp_path / "mlp.safetensors"
    save_file(VectorNet(DIM, 16).state_dict(), str(weights))
    return {"data": data, "weights": weights, "root": tmp_path}


def fit(files: dict[str, Path], strategy: str, out: str, **extra: object):
    cls = classifier_for_data(files["data"])
    assert cls.modality is VECTORS
    clf = cls(backbone="toy-mlp", weights=str(files["weights"]), strategy=strategy, val_fraction=0.25,
              cache_dir=str(files["root"] / "cache"), **extra)
    clf.fit(str(files["data"]))
    return clf, clf.save(files["root"] / out)


def test_a_toy_modality_trains_exports_serves_and_reports(registered, files) -> None:
    from transferkit.export.exporter import export_run
    from transferkit.report.html import write_report
    from transferkit.serve.app import create_app

    probe, probe_run = fit(files, "linear-probe", "probe")
    assert probe.metrics_["val"]["accuracy"] >= 0.9  # two well separated clouds
    tuned, tuned_run = fit(files, "finetune", "tuned", epochs=2, batch_size=16)
    assert len(tuned.metrics_["history"]) == 2 and tuned.metrics_["val"]["accuracy"] >= 0.9
    assert (tuned_run / "engine.onnx").is_file()  # the tuned network's engine, exported by the modality

    loaded = load_classifier(tuned_run)
    assert loaded.modality is VECTORS
    assert list(loaded.predict(["1,1,1,1,1,1", "-1,-1,-1,-1,-1,-1"])) == ["high", "low"]

    exported = export_run(tuned_run, "onnx", files["root"] / "export")
    assert exported.parity["ok"] and exported.parity["top1_agreement"] == 1.0
    contract = json.loads((files["root"] / "export" / "preprocessing.json").read_text())
    assert contract["inputs"] == [{"name": "vectors", "dtype": "float32", "shape": ["batch", DIM]}]

    with TestClient(create_app(tuned_run)) as client:
        answer = client.post("/predict", json={"vectors": [[2.0] * DIM, [-2.0] * DIM]})
        assert answer.status_code == 200, answer.text
        assert [r["predictions"][0]["label"] for r in answer.json()["results"]] == ["high", "low"]
        short = client.post("/predict", json={"vectors": [[1.0, 2.0]]})
        assert short.status_code == 422 and "not 6" in short.json()["detail"]
        assert client.get("/metadata").json()["modality"] == "vector"

    page = write_report([probe_run, tuned_run], files["root"] / "report.html").read_text()
    assert "<td>vector</td>" in page and "Comparison" in page
    assert "errors vectors" in page or "every item was classified correctly" in page


def test_tune_and_training_read_the_modalitys_own_defaults(registered) -> None:
    from transferkit.config import RunConfig
    from transferkit.modalities import IMAGE, TEXT
    from transferkit.tuning.space import FINETUNE, PROBE

    config = RunConfig()
    assert [config.setting("lr", m.defaults.training) for m in (IMAGE, TEXT, VECTORS)] == [3e-4, 2e-4, 1e-2]
    # the toy modality lists no settings of its own: augment (images') and pooling (text's) are not tuned for it
    assert [d.describe("vector") for d in FINETUNE.active("vector", config, frozenset())] == [
        "lr log-uniform [3e-05, 0.003]", "layer_decay uniform [0.5, 1]", "epochs integer [1, 2]"]
    assert [d.name for d in PROBE.active("vector", config, frozenset())] == ["l2", "class_weights"]
