"""``transferkit report``: one self-contained HTML file, checked in headless Chromium from a screenshot (every
figure present and not blank); and the TensorBoard training callback."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the report needs the report extra: pip install -e '.[report]'")

from conftest import make_folder, make_image  # noqa: E402 - after the check above
from PIL import Image
from scipy import ndimage
from test_text import sentiment_rows, write_csv

from transferkit import ImageClassifier, TextClassifier
from transferkit.cli import main
from transferkit.plugins import LOSS_TERMS
from transferkit.report import figures
from transferkit.report.html import write_report
from transferkit.runs.rundir import read_run
from transferkit.train.losses import LossTerm

CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
                None)
HAVE_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
MARKER = (255, 0, 255)  # the outline the test draws around each figure, to find them in the screenshot


class Spread(LossTerm):
    """A toy loss term, so the run's history has a ``loss_<term>`` column to draw."""

    name = "spread"

    def forward(self, batch, outputs):
        return outputs.features.pow(2).mean()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, session_cache: Path):
    """A fine-tuned image run (two phases, a loss term, TensorBoard on), a probe on the same data, and a text
    probe; the image validation folder holds one image of the other colour per class, so there are errors."""
    LOSS_TERMS.register("spread", Spread, replace=True)
    folder = tmp_path_factory.mktemp("report")
    data = make_folder(folder / "data", {"train": 5, "val": 2})
    make_image(data / "val" / "red" / "odd.png", (40, 60, 220), seed=99)
    make_image(data / "val" / "blue" / "odd.png", (220, 40, 40), seed=98)
    cache = str(session_cache)
    tuned = ImageClassifier(strategy="gradual", epochs=2, freeze_epochs=1, batch_size=8, image_size=32, workers=0,
                            precision="no", augment="none", methods=["spread:weight=0.01"], cache_dir=cache,
                            callbacks=[f"tensorboard:dir={folder / 'tb'}"] if HAVE_TENSORBOARD else [])
    tuned.verbose = False
    tuned.fit(str(data), out=folder / "tuned").save(folder / "tuned", overwrite=True)
    ImageClassifier(image_size=32, cache_dir=cache).fit(str(data)).save(folder / "probe")
    reviews = write_csv(folder / "reviews.csv", sentiment_rows())
    TextClassifier(max_length=32, cache_dir=cache).fit(str(reviews)).save(folder / "text")
    yield folder
    LOSS_TERMS.unregister("spread")


@pytest.mark.skipif(not HAVE_TENSORBOARD, reason="tensorboard is not installed: pip install -e '.[tensorboard]'")
def test_tensorboard_callback_writes_each_epochs_scalars(runs: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # optional: skipped without

    events = EventAccumulator(str(runs / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/loss_ce", "train/loss_spread", "val/accuracy", "val/loss", "lr"} <= tags
    assert [e.step for e in events.Scalars("val/accuracy")] == [1, 2]


def test_learning_curves_draw_every_loss_term(runs: Path) -> None:
    history = read_run(runs / "tuned").metrics["history"]
    assert {"loss_ce", "loss_spread"} <= set(history[0])
    figure = figures.learning_curves(history)
    labels = {text.get_text() for axis in figure.axes if axis.get_legend() for text in axis.get_legend().get_texts()}
    assert {"train_loss", "val_loss", "loss_ce", "loss_spread", "val_accuracy", "val_macro_f1"} <= labels


def report_of(runs: Path, out: Path) -> str:
    write_report([runs / "tuned", runs / "probe"], out)
    return out.read_text()


def test_report_is_one_self_contained_file(runs: Path, tmp_path: Path) -> None:
    page = report_of(runs, tmp_path / "report.html")
    assert page.count('<img class="figure"') == 11  # the comparison's curves, then 5 per run
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page) and "<script" not in page
    assert "Misclassified (2 of 6" in page  # the probe: the two images of the other colour
    assert "<td>gradual</td>" in page and "<td>linear-probe</td>" in page
    text = tmp_path / "text.html"
    write_report([runs / "text"], text, data=write_csv(tmp_path / "flipped.csv", [
        ("I loved this wonderful film", "neg"), ("boring and far too long", "pos")]))
    assert "<td class=\"text\">I loved this wonderful film</td><td>neg</td><td>pos</td>" in text.read_text()


def figure_frames(screenshot: Path) -> list[np.ndarray]:
    """The inside of each marker-outlined rectangle of the screenshot (a figure as the browser drew it)."""
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    marker = (np.abs(pixels - np.array(MARKER)).sum(axis=2) < 40)
    labels, _ = ndimage.label(marker)
    frames = []
    for rows, cols in ndimage.find_objects(labels):
        if rows.stop - rows.start > 60 and cols.stop - cols.start > 60:
            frames.append(pixels[rows.start + 6:rows.stop - 6, cols.start + 6:cols.stop - 6])
    return frames


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium); "
                                            "the report is not checked in a browser")
def test_report_renders_in_headless_chromium_with_every_figure_drawn(runs: Path, tmp_path: Path) -> None:
    page = report_of(runs, tmp_path / "report.html")
    marked = tmp_path / "marked.html"  # the same page, each figure outlined in a colour no plot uses
    marked.write_text(page.replace("</style>", "img.figure{outline:4px solid rgb(255,0,255);outline-offset:0}"
                                              "</style>", 1))
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1100,9000",
                    f"--screenshot={shot}", marked.as_uri()], capture_output=True, timeout=120, check=True)
    frames = figure_frames(shot)
    assert len(frames) == page.count('<img class="figure"'), f"figures drawn: {len(frames)}; see {shot}"
    for frame in frames:
        ink = (frame.sum(axis=2) < 600).mean()  # pixels that are not white or near it
        assert frame.std() > 20 and ink > 0.01, f"a blank figure in {shot}"


def test_cli_report_and_refusals(runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture) -> None:
    def run(*args: object) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["transferkit", "report", *map(str, args)])
        with pytest.raises(SystemExit) as stopped:
            main()
            raise SystemExit(0)
        captured = capsys.readouterr()
        return stopped.value.code, captured.out + captured.err

    code, output = run(runs / "probe", "--out", tmp_path / "r.html")
    assert code == 0 and "written to" in output and (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert run(runs / "probe", "--out", tmp_path / "r.html")[0] == 0  # its own report is replaced
    (tmp_path / "notes.html").write_text("<p>mine</p>")
    code, output = run(runs / "probe", "--out", tmp_path / "notes.html")
    assert code == 2 and "is not a transferkit report" in output
    assert (tmp_path / "notes.html").read_text() == "<p>mine</p>"
    code, output = run(runs / "probe", "--out", runs / "probe" / "mine.html")
    assert code == 2 and "outside it" in output
    assert run(runs / "probe", "--out", runs / "probe" / "report.html")[0] == 0  # the run's own report


def test_a_fine_tuned_runs_report_reads_through_its_own_engine(runs: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The report predicts with the engine saved in the run folder: an empty cache exports nothing."""
    from transferkit.features import engines

    run = tmp_path / "tuned"
    shutil.copytree(runs / "tuned", run)
    (tmp_path / "empty-cache").mkdir()  # the default cache (a run's own cache_dir is never written to)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "empty-cache"))
    exports = []
    monkeypatch.setattr(engines, "export_onnx", lambda *args: exports.append(args))  # (a failed one falls back)
    write_report([run], tmp_path / "report.html")
    assert "Misclassified" in (tmp_path / "report.html").read_text()
    assert not exports and any((tmp_path / "empty-cache").rglob("*.onnx"))  # the run's engine, linked in
