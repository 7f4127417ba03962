"""Shared fixtures: tiny image folders and an isolated cache per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the whole session, so each backbone is exported to ONNX once."""
    return tmp_path_factory.mktemp("tk-cache")


@pytest.fixture(autouse=True)
def isolated_cache(session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(session_cache))
    return session_cache


def make_image(path: Path, colour: tuple[int, int, int], size: int = 48, seed: int = 0) -> Path:
    """A noisy image dominated by ``colour``: two colours make an easily separable 2-class problem."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour, dtype=np.float32) + rng.normal(0, 30, (size, size, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220)}


def make_folder(root: Path, splits: dict[str, int], classes: dict[str, tuple[int, int, int]] = COLOURS) -> Path:
    """``root/<split>/<class>/img_i.png`` with ``splits[split]`` images per class (split "" = no split level)."""
    seed = 0
    for split, count in splits.items():
        for name, colour in classes.items():
            for i in range(count):
                seed += 1
                make_image(root / split / name / f"img_{i}.png", colour, seed=seed)
    return root


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "data", {"train": 8, "val": 4})


# Small input size keeps tests fast; the same code path runs at 224 in benchmarks.
FAST = {"image_size": 64}


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """``transferkit ARGS`` through the console script's ``main``: (exit code, stdout, stderr)."""
    from transferkit.cli import main

    monkeypatch.setattr(sys, "argv", ["transferkit", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as stopped:
        code = stopped.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server for the session (tests/postgres.py): its URL, with a password; skipped without the
    Debian postgresql package's programs."""
    from postgres import postgres_bin, postgres_server

    if postgres_bin() is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql; .ci/run does)")
    with postgres_server() as url:
        yield url
