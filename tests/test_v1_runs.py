"""Run folders written by transferkit 0.1 before the package moved into sub-packages still load and predict.

``fixtures/v1/`` was written by that old code (see its README.md) and must never be regenerated. These tests
use only what users of those runs use: ``ImageClassifier`` / ``TextClassifier`` from ``transferkit``,
``load``, ``predict_proba``, ``classes_``, and ``transferkit predict``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from transferkit import ImageClassifier, TextClassifier

V1 = Path(__file__).resolve().parent / "fixtures" / "v1"
EXPECTED = json.loads((V1 / "expected.json").read_text())
CLASSES = {"image": ImageClassifier, "text": TextClassifier}


def inputs_for(run: str) -> list[str]:
    """Absolute image paths (the fixture stores them relative to fixtures/v1), or the texts."""
    if EXPECTED["runs"][run]["kind"] == "image":
        return [str(V1 / p) for p in EXPECTED["image_inputs"]]
    return list(EXPECTED["text_inputs"])


def copy_run(run: str, tmp_path: Path) -> Path:
    """A copy of the fixture run, so nothing a load or predict writes can land in the repository."""
    target = tmp_path / "runs" / run
    shutil.copytree(V1 / run, target)
    return target


@pytest.mark.parametrize("run", sorted(EXPECTED["runs"]))
def test_v1_run_loads_and_reproduces_probabilities(run: str, tmp_path: Path):
    expected = EXPECTED["runs"][run]
    clf = CLASSES[expected["kind"]].load(copy_run(run, tmp_path))
    assert list(clf.classes_) == expected["classes"]
    proba = np.asarray(clf.predict_proba(inputs_for(run)))
    want = np.asarray(expected["proba"])
    assert proba.shape == want.shape
    np.testing.assert_allclose(proba, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("run", ["image_gradual", "text_probe"])
def test_v1_run_predicts_from_the_command_line(run: str, tmp_path: Path):
    expected = EXPECTED["runs"][run]
    inputs = inputs_for(run)
    env = {**os.environ, "TRANSFERKIT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "transferkit", "predict", str(copy_run(run, tmp_path)), *inputs,
                             "--json"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(records) == len(inputs)
    want = [expected["classes"][int(np.argmax(p))] for p in expected["proba"]]
    assert sorted(set(want)) == sorted(expected["classes"])  # the inputs cover every class
    for given, record, label in zip(inputs, records, want):
        if expected["kind"] == "image":
            assert Path(record["path"]).resolve() == Path(given).resolve()
        else:
            assert record["text"] == given
        assert record["predictions"][0]["label"] == label
