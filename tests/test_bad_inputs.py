"""The bad-input corpus of issue #11: every bad input, fault and misuse case the issue found, run through the
command line as a user would, each judged on its exit code, its one message line (naming the file or field
and what to do), the absence of a traceback, and nothing of the user's lost.

The table below *is* the corpus: one ``Case`` per input, grouped by what the issue found it doing —
``security`` (runs planted code, exhausts memory), ``lost`` (deletes or overwrites the user's files),
``traceback`` (a crash instead of a message), ``silent`` (a wrong answer without a word) and ``usability``.
Each case's fields are explained in tests/corpus_cases.py, which runs and judges them.

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_bad_inputs.py
    .venv/bin/python tests/test_bad_inputs.py --summary     # cases / passing / failing per class
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import corpus_adaptbounds
import corpus_concurrency
import corpus_int8
import corpus_runfiles
import corpus_serve
from corpus_cases import FAST_FINETUNE, GiB, KINDS, TEXT_ROWS, Base, Case, Workspace, csv_text, run_case, run_json

PROBE = ("--image-size", "32", "--engine", "onnx")  # a linear probe on the session's exported engine
TEXT = ("--max-length", "16", "--engine", "onnx")
FINETUNE = (*FAST_FINETUNE, "--engine", "onnx")
BAD_NAME = os.fsdecode(b"bad\xff.png")  # a file name that is not UTF-8
MARKER = "owned.txt"  # what the planted code would create
OUT_DOT = r"--out|^error: \.[: ]|current folder"  # a message about `--out .` names the option or the folder


# ----------------------------------------------------------------------------------------------------------
# Small generators the setups share
# ----------------------------------------------------------------------------------------------------------
def data(ws: Workspace) -> None:
    ws.images("data")


def image_run(ws: Workspace) -> None:
    """A trained image probe in run/, a data folder and one image x.png."""
    ws.copy("image_run", "run")
    ws.images("data")
    ws.image("x.png")


def text_run(ws: Workspace) -> None:
    ws.copy("text_run", "run")


def text_csv(ws: Workspace, rows: list[tuple[str, str]] | None = None, header: str = "text,label",
             lines: dict[int, str] | None = None) -> None:
    """t.csv with the session's 12 rows; ``lines`` replaces file lines by number (1 is the header)."""
    content = csv_text(rows or TEXT_ROWS, header).splitlines()
    for number, line in (lines or {}).items():
        content[number - 1] = line
    ws.write("t.csv", "\n".join(content) + "\n")


def finetune_config(ws: Workspace, folder: str = "run/checkpoints") -> None:
    ws.write(f"{folder}/config.yaml", f"data: {ws.path('data')}\nstrategy: finetune\nepochs: 1\nbatch_size: 4\n"
                                      "workers: 0\nimage_size: 32\naugment: none\nengine: onnx\n")


class Exploit:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('owned')",)


def planted_pickle(ws: Workspace, rel: str) -> None:
    ws.write(rel, pickle.dumps(Exploit(ws.path(MARKER))))


def data_and_file(ws: Workspace) -> None:
    """A data folder and afile, a plain file where a folder is expected."""
    data(ws)
    ws.write("afile", "not a folder\n")


def user_project(ws: Workspace, rel: str = "project") -> None:
    """A folder of the user's own work, which no --overwrite may take."""
    ws.write(f"{rel}/notes.txt", "three weeks of notes\n")
    ws.write(f"{rel}/src/train.py", "print('my code')\n")
    ws.write(f"{rel}/results.csv", "epoch,acc\n1,0.5\n")


def as_root() -> str | None:
    return "running as root: permissions do not stop root (see out-under-a-file)" if os.geteuid() == 0 else None


# ----------------------------------------------------------------------------------------------------------
# Extra checks (run when the case's own fields pass)
# ----------------------------------------------------------------------------------------------------------
def recorded_as_skipped(name: str):
    def check(ws: Workspace, proc) -> None:
        metrics = (ws.path("run") / "metrics.json").read_text(errors="replace")
        assert name in metrics, f"{name} is not listed among the skipped files in run/metrics.json"
    return check


def trained_on(count: int):
    def check(ws: Workspace, proc) -> None:
        described = run_json(ws.path("run") / "metrics.json")["data"]
        found = sum(int(n) for n in re.findall(r"(?:train|val) (\d+)", described))
        assert found == count, f"trained/validated on {found} items, expected {count} ({described})"
    return check


def merged_labels(ws: Workspace, proc) -> None:
    classes = run_json(ws.path("run") / "classes.json")
    assert sorted(c.strip().lower() for c in classes) == ["neg", "pos"], f"classes are {classes}, not merged"


def float_tiff_not_black(ws: Workspace, proc) -> None:
    from transferkit.modalities.image.images import load_rgb

    pixels = np.asarray(load_rgb(ws.path("float.tif")))
    assert np.ptp(pixels) >= 128, f"the 0..1 float TIFF decodes to {pixels.min()}..{pixels.max()} (near black)"


def lists(text: str):
    def check(ws: Workspace, proc) -> None:
        assert text in proc.stdout, f"{text} is not listed"
    return check


def fits_columns(width: int, *distinct: str):
    """Every line within ``width``, nothing cut to "…", and each of ``distinct`` (what tells runs apart) shown."""
    def check(ws: Workspace, proc) -> None:
        wide = [line for line in proc.stdout.splitlines() if len(line) > width]
        assert not wide, f"{len(wide)} line(s) wider than {width} columns, e.g. {wide[0]!r}"
        cut = [line.strip() for line in proc.stdout.splitlines() if "…" in line]
        assert not cut, f"{len(cut)} line(s) cut short with '…', e.g. {cut[-1]!r}"
        missing = [name for name in distinct if name not in proc.stdout]
        assert not missing, f"the table does not show {', '.join(missing)}: the runs cannot be told apart"
    return check


def cleared(rel: str):
    def check(ws: Workspace, proc) -> None:
        left = [p for p in ws.path(rel).rglob("*") if p.is_file()] if ws.path(rel).exists() else []
        assert not left, f"cache clear left {len(left)} file(s) in {rel}"
    return check


# ----------------------------------------------------------------------------------------------------------
# security: planted code must never run; a tiny file must not take the machine's memory or time
# ----------------------------------------------------------------------------------------------------------
def pickled_last_pt(ws: Workspace) -> None:
    data(ws)
    finetune_config(ws)
    planted_pickle(ws, "run/checkpoints/last.pt")


def pickled_last_safetensors(ws: Workspace) -> None:
    data(ws)
    finetune_config(ws)
    planted_pickle(ws, "run/checkpoints/last.safetensors")


def pickled_weights(ws: Workspace) -> None:
    data(ws)
    planted_pickle(ws, "evil.pth")


def wide_png(ws: Workspace) -> None:
    image_run(ws)
    Image.new("RGB", (50000, 1), (200, 30, 30)).save(ws.path("wide.png"))  # 230 bytes on disk


def tall_png_in_data(ws: Workspace) -> None:
    data(ws)
    Image.new("RGB", (1, 50000), (200, 30, 30)).save(ws.path("data/red/tall.png"))


def yaml_bomb(ws: Workspace) -> None:
    """Nine levels of nine aliases: 387 million strings once expanded (or printed)."""
    data(ws)
    levels = ["  - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    ws.write("config.yaml", "data: data\nseed:\n" + "\n".join(levels) + "\n")


SECURITY = [
    Case("pickled-checkpoint-resume", "security", pickled_last_pt,
         ("train", "--config", "run/checkpoints/config.yaml", "--resume"), 2,
         says=(r"last\.pt",), keep=("run",), absent=(MARKER,),
         note="an old pickled checkpoint is refused by name, never unpickled"),
    Case("pickle-named-last-safetensors", "security", pickled_last_safetensors,
         ("train", "--config", "run/checkpoints/config.yaml", "--resume"), 2,
         says=(r"last\.safetensors",), keep=("run",), absent=(MARKER,)),
    Case("pickled-weights-file", "security", pickled_weights,
         ("train", "data", "--weights", "evil.pth", *PROBE, "--out", "run"), 2,
         says=(r"evil\.pth",), absent=(MARKER, "run")),
    Case("wide-png-predict", "security", wide_png, ("predict", "run", "wide.png"), (1, 2),
         says=(r"wide\.png", r"(?i)aspect|too (wide|tall|long|large|big)|pixel|dimension|50000"),
         address_space=2 * GiB,
         note="50000x1 px resized by its short side would be 1.8M x 36 px (11M x 256 at the default size)"),
    Case("tall-png-in-training-folder", "security", tall_png_in_data,
         ("train", "data", *PROBE, "--out", "run"), (0, 2),
         says=(r"tall\.png",), address_space=2 * GiB, note="skipped with a warning naming it, or an error"),
    Case("yaml-alias-bomb", "security", yaml_bomb, ("train", "--config", "config.yaml", "--out", "run"), 2,
         says=(r"config\.yaml|seed",), max_seconds=20, max_stderr=500, address_space=2 * GiB, timeout=25,
         absent=("run",)),
]


# ----------------------------------------------------------------------------------------------------------
# lost: --overwrite replaces a transferkit run and nothing else; cache clear deletes transferkit's cache only
# ----------------------------------------------------------------------------------------------------------
def data_in_project(ws: Workspace) -> None:
    ws.images("project/data")
    user_project(ws)


def project_and_data(ws: Workspace) -> None:
    data(ws)
    user_project(ws)


def user_cache_lookalike(ws: Workspace) -> None:
    ws.write("mydocs/features/report.txt", "quarterly report\n")
    ws.write("mydocs/engines/diagram.svg", "<svg/>\n")
    ws.write("mydocs/todo.md", "- buy milk\n")


LOST = [
    Case("out-is-data-overwrite", "lost", data, ("train", "data", *PROBE, "--out", "data", "--overwrite"), 2,
         says=(r"data",), keep=("data",)),
    Case("out-contains-data-overwrite", "lost", data_in_project,
         ("train", "project/data", *PROBE, "--out", "project", "--overwrite"), 2,
         says=(r"project",), keep=("project",)),
    Case("out-inside-data-overwrite", "lost", data, ("train", "data", *PROBE, "--out", "data/red", "--overwrite"),
         2, says=(r"data/red",), keep=("data",), note="the run would replace the class folder red/"),
    Case("overwrite-user-project-folder", "lost", project_and_data,
         ("train", "data", *PROBE, "--out", "project", "--overwrite"), 2,
         says=(r"project",), keep=("project",), note="a folder that is not a run is never replaced"),
    Case("overwrite-out-dot", "lost", project_and_data,
         ("train", "../data", *PROBE, "--out", ".", "--overwrite"), 2, says=(OUT_DOT,), keep=("project", "data"),
         cwd="project"),
    Case("overwrite-out-empty-string", "lost", project_and_data,
         ("train", "../data", *PROBE, "--out", "", "--overwrite"), 2, says=(r"--out",), keep=("project", "data"),
         cwd="project"),
    Case("overwrite-a-file", "lost", data_and_file, ("train", "data", *PROBE, "--out", "afile", "--overwrite"), 2,
         says=(r"afile",), keep=("afile",)),
    Case("cache-clear-user-folders", "lost", user_cache_lookalike, ("cache", "clear", "--cache-dir", "mydocs"), 2,
         says=(r"mydocs",), keep=("mydocs",), note="features/ and engines/ here are the user's, not a cache"),
    Case("cache-clear-user-folders-by-env", "lost", user_cache_lookalike, ("cache", "clear", "--kind", "features"),
         2, says=(r"mydocs",), keep=("mydocs",), env={"TRANSFERKIT_CACHE": "{tmp}/mydocs"}),
]


# ----------------------------------------------------------------------------------------------------------
# traceback: each of these crashed; each must be one error line naming the file or field
# ----------------------------------------------------------------------------------------------------------
def damaged_model(kind: str):
    def setup(ws: Workspace) -> None:
        image_run(ws)
        model = ws.path("run/model.safetensors")
        real = model.read_bytes()
        model.write_bytes({"empty": b"", "truncated": real[:200], "garbage": b"\x00\xff" * 2048}[kind])
    return setup


MODEL_COMMANDS = {
    "predict": ("predict", "run", "x.png"),
    "predict-json": ("predict", "run", "x.png", "--json"),
    "evaluate": ("evaluate", "run", "data"),
    "compare": ("compare", "run"),
}


def damaged_json(ws: Workspace) -> None:
    image_run(ws)
    ws.write("run/classes.json", '["red", "blu')


def bad_name_in_data(ws: Workspace) -> None:
    data(ws)
    shutil.copyfile(ws.path("data/red/img_0.png"), ws.path("data/red") / BAD_NAME)


def bad_name_beside_run(ws: Workspace) -> None:
    image_run(ws)
    shutil.copyfile(ws.path("x.png"), ws.path("data/red") / BAD_NAME)


def damaged_tokenizer(ws: Workspace) -> None:
    text_run(ws)
    ws.write("run/tokenizer/tokenizer.json", '{"version": "1.0", "model": {"type": "Word')


def damaged_run_config(ws: Workspace) -> None:
    image_run(ws)
    ws.write("run/config.yaml", "backbone: [efficientnet_lite0\nstrategy: linear-probe\n")


def read_only_parent(ws: Workspace) -> None:
    data(ws)
    ws.path("ro").mkdir()
    ws.path("ro").chmod(0o555)


def string_val_fraction(ws: Workspace) -> None:
    data(ws)
    ws.write("config.yaml", 'data: data\nval_fraction: "0.2"\n')


TRACEBACK = [
    *(Case(f"{kind}-model-{name}", "traceback", damaged_model(kind), argv, 2, says=(r"model\.safetensors",),
           keep=("run",))
      for kind in ("empty", "truncated", "garbage") for name, argv in MODEL_COMMANDS.items()),
    Case("damaged-classes-json-predict", "traceback", damaged_json, ("predict", "run", "x.png"), 2,
         says=(r"classes\.json",)),
    Case("damaged-run-config-predict", "traceback", damaged_run_config, ("predict", "run", "x.png"), 2,
         says=(r"config\.yaml",)),
    Case("damaged-tokenizer-predict", "traceback", damaged_tokenizer, ("predict", "run", "a warm film"), 2,
         says=(r"run/tokenizer|tokenizer\.json",), keep=("run",)),
    Case("cache-dir-is-a-file", "traceback", data_and_file,
         ("train", "data", *PROBE, "--cache-dir", "afile", "--out", "run"), 2, says=(r"afile",), keep=("afile",)),
    Case("non-utf8-name-train", "traceback", bad_name_in_data, ("train", "data", *PROBE, "--out", "run"), (0, 2),
         says=(r"bad",), warns=False, keep=("data",), note="trains on it, or one line naming it"),
    Case("non-utf8-name-train-no-cache", "traceback", bad_name_in_data,
         ("train", "data", *PROBE, "--no-cache", "--out", "run"), (0, 2), says=(r"bad",), warns=False,
         keep=("data",)),
    Case("non-utf8-name-predict-file", "traceback", bad_name_beside_run,
         ("predict", "run", f"data/red/{BAD_NAME}"), (0, 1, 2), says=(r"bad",), warns=False),
    Case("non-utf8-name-predict-folder", "traceback", bad_name_beside_run, ("predict", "run", "data/red"),
         (0, 1, 2), says=(r"bad",), warns=False),
    Case("non-utf8-name-predict-json", "traceback", bad_name_beside_run, ("predict", "run", "data/red", "--json"),
         (0, 1, 2), says=(r"bad",), warns=False),
    Case("read-only-out-parent", "traceback", read_only_parent, ("train", "data", *PROBE, "--out", "ro/run"), 2,
         says=(r"\bro\b", r"(?i)permission|writ"), skip=as_root),
    Case("out-under-a-file", "traceback", data_and_file, ("train", "data", *PROBE, "--out", "afile/run"), 2,
         says=(r"afile",), keep=("afile",)),
    Case("config-val-fraction-string", "traceback", string_val_fraction,
         ("train", "--config", "config.yaml", "--out", "run"), 2, says=(r"val_fraction",)),
    Case("out-dot-beside-user-files", "traceback", project_and_data, ("train", "../data", *PROBE, "--out", "."), 2,
         says=(OUT_DOT,), avoid=(r"pass --overwrite",), keep=("project",), cwd="project",
         note="the folder is not a run: suggesting --overwrite would invite deleting it"),
    Case("out-empty-string", "traceback", project_and_data, ("train", "../data", *PROBE, "--out", ""), 2,
         says=(r"--out",), avoid=(r"pass --overwrite",), keep=("project",), cwd="project"),
]


# ----------------------------------------------------------------------------------------------------------
# silent: each did the wrong thing without a word; each must now warn (exit 0) or stop (exit 2), naming it
# ----------------------------------------------------------------------------------------------------------
def text_run_and_folder(ws: Workspace) -> None:
    text_run(ws)
    ws.path("texts").mkdir()


def text_run_and_notes(ws: Workspace) -> None:
    text_run(ws)
    ws.write("notes.txt", "a wonderful film\n")


def loop_link(ws: Workspace) -> None:
    data(ws)
    os.symlink("loop.png", ws.path("data/red/loop.png"))


def dangling_link(ws: Workspace) -> None:
    data(ws)
    os.symlink("no-such-image.png", ws.path("data/red/gone.png"))


def empty_png(ws: Workspace) -> None:
    data(ws)
    ws.write("data/red/empty.png", b"")


def stray_image(ws: Workspace) -> None:
    data(ws)
    ws.image("data/stray.png")


def notebook_checkpoint(ws: Workspace) -> None:
    data(ws)
    ws.image("data/red/.ipynb_checkpoints/img_0-checkpoint.png")


def float_tiff(ws: Workspace) -> None:
    image_run(ws)
    ramp = np.tile(np.linspace(0.0, 1.0, 48, dtype=np.float32), (48, 1))
    Image.fromarray(ramp).save(ws.path("float.tif"))  # mode "F", values in [0, 1]


def class_beside_splits(ws: Workspace) -> None:
    ws.images("data", {"train": 4, "val": 2})
    ws.image("data/green/img_0.png", (40, 200, 40))


def single_image_class(ws: Workspace) -> None:
    ws.images("data", {"train": 4, "val": 2})
    ws.image("data/train/green/img_0.png", (40, 200, 40))


def finished_run(ws: Workspace) -> None:
    ws.copy("ft_run", "run")


SILENT = [
    Case("text-predict-missing-csv", "silent", text_run, ("predict", "run", "missing.csv"), 2,
         says=(r"missing\.csv", r"--text"), note="today the name itself is classified as a text"),
    Case("text-predict-folder", "silent", text_run_and_folder, ("predict", "run", "texts"), 2,
         says=(r"texts", r"--text")),
    Case("text-predict-txt-file", "silent", text_run_and_notes, ("predict", "run", "notes.txt"), 2,
         says=(r"notes\.txt", r"--text")),
    Case("csv-row-with-extra-field", "silent",
         lambda ws: text_csv(ws, lines={3: "a wonderful and warm film number 9,pos,extra"}),
         ("train", "t.csv", *TEXT, "--out", "run"), (0, 2), says=(r"line 3\b|:3\b",)),
    Case("csv-unbalanced-quote", "silent", lambda ws: text_csv(ws, lines={3: '"a wonderful film number 9,pos'}),
         ("train", "t.csv", *TEXT, "--out", "run"), (0, 2), says=(r"line 3\b|:3\b",),
         note="the quote opened on line 3 swallows every row after it"),
    Case("csv-duplicate-column", "silent", lambda ws: text_csv(ws, header="text,label,label",
                                                                rows=[(t, f"{y},") for t, y in TEXT_ROWS]),
         ("train", "t.csv", *TEXT, "--out", "run"), (0, 2), says=(r"label", r"(?i)duplicate|twice|more than once")),
    Case("labels-differing-in-case-and-space", "silent",
         lambda ws: text_csv(ws, [(t, y) for (t, _), y in zip(TEXT_ROWS[:6], ["Pos", "pos", " pos "] * 2)]
                             + TEXT_ROWS[6:]),
         ("train", "t.csv", *TEXT, "--out", "run"), 0, says=(r"Pos", r"(?i)merg|same|one (label|class)|combin|treat"),
         check=merged_labels, note="the warning names the spellings it merged"),
    Case("single-example-class-text", "silent", lambda ws: text_csv(ws, TEXT_ROWS + [("an odd one out", "rare")]),
         ("train", "t.csv", *TEXT, "--out", "run"), (0, 2), says=(r"rare",)),
    Case("single-image-class", "silent", single_image_class, ("train", "data", *PROBE, "--out", "run"), (0, 2),
         says=(r"green",)),
    Case("symlink-loop-in-class-folder", "silent", loop_link, ("train", "data", *PROBE, "--out", "run"), 0,
         says=(r"loop\.png",), keep=("data",), check=recorded_as_skipped("loop.png")),
    Case("dangling-link-in-class-folder", "silent", dangling_link, ("train", "data", *PROBE, "--out", "run"), 0,
         says=(r"gone\.png",), keep=("data",), check=recorded_as_skipped("gone.png")),
    Case("empty-png-in-class-folder", "silent", empty_png, ("train", "data", *PROBE, "--out", "run"), 0,
         says=(r"empty\.png",), check=recorded_as_skipped("empty.png"), note="README: skipped with a warning"),
    Case("image-beside-class-folders", "silent", stray_image, ("train", "data", *PROBE, "--out", "run"), 0,
         says=(r"stray\.png",)),
    Case("class-folder-beside-train-split", "silent", class_beside_splits, ("train", "data", *PROBE, "--out", "run"),
         0, says=(r"green",), note="data/green/ is neither a split nor inside train/: say it is not used"),
    Case("notebook-checkpoints-in-class-folder", "silent", notebook_checkpoint,
         ("train", "data", *PROBE, "--out", "run"), 0, says=(r"\.ipynb_checkpoints",), check=trained_on(8)),
    Case("float-tiff-not-black", "silent", float_tiff, ("predict", "run", "float.tif"), 0, avoid=(r"warning:",),
         check=float_tiff_not_black),
    Case("epochs-with-linear-probe", "silent", data, ("train", "data", *PROBE, "--epochs", "3", "--out", "run"), 2,
         says=(r"--epochs",), absent=("run",)),
    Case("gradual-one-epoch-trains-only-the-head", "silent", data,
         ("train", "data", "--strategy", "gradual", *FINETUNE, "--out", "run"), (0, 2),
         says=(r"epochs", r"(?i)head")),
    Case("fp16-on-cpu", "silent", data,
         ("train", "data", "--strategy", "finetune", *FINETUNE, "--precision", "fp16", "--out", "run"), 2,
         says=(r"--precision|fp16",), env={"CUDA_VISIBLE_DEVICES": ""}),
    Case("last-k-beyond-block-count", "silent", data,
         ("train", "data", "--strategy", "last-k:99", *FINETUNE, "--out", "run"), 2,
         says=(r"99", r"(?i)block")),
    Case("predict-top-k-zero", "silent", image_run, ("predict", "run", "x.png", "--top-k", "0"), 2,
         says=(r"--top-k",)),
    Case("predict-top-k-negative", "silent", image_run, ("predict", "run", "x.png", "--top-k", "-2"), 2,
         says=(r"--top-k",)),
    Case("resume-finished-run", "silent", finished_run,
         ("train", "--config", "run/checkpoints/config.yaml", "--resume"), 2,
         says=(r"(?i)finished|complete",), keep=("run",)),
    Case("offline-hub-backbone", "silent", data,
         ("train", "data", "--backbone", "timm:resnet18", *PROBE, "--out", "run"), 2,
         says=(r"resnet18", r"--weights"), max_seconds=30, absent=("run",)),
]


# ----------------------------------------------------------------------------------------------------------
# usability
# ----------------------------------------------------------------------------------------------------------
def long_run_paths(ws: Workspace) -> None:
    deep = "experiments-with-rather-long-names/2024-06-01-colour-classifier/ablations"
    ws.copy("image_run", f"{deep}/efficientnet-lite0-probe-seed-0")
    ws.copy("image_run", f"{deep}/efficientnet-lite0-probe-seed-1")


def cache_copy(ws: Workspace) -> None:
    """A copy of the session's real cache (without the large .onnx files)."""
    ws.base.get("image_run")
    shutil.copytree(ws.base.cache, ws.path("cache"), ignore=shutil.ignore_patterns("*.onnx", "*.onnx.data"))


USABILITY = [
    Case("backbones-lists-text-encoder", "usability", lambda ws: None, ("backbones",), 0,
         check=lists("all-MiniLM-L6-v2")),
    Case("augment-none-no-userwarning", "usability", data,
         ("train", "data", "--strategy", "finetune", *FINETUNE, "--augment", "none", "--out", "run"), 0,
         avoid=(r"UserWarning",)),
    Case("compare-long-paths-fit-80-columns", "usability", long_run_paths,
         ("compare", "experiments-with-rather-long-names/2024-06-01-colour-classifier/ablations/"
                     "efficientnet-lite0-probe-seed-0",
          "experiments-with-rather-long-names/2024-06-01-colour-classifier/ablations/"
          "efficientnet-lite0-probe-seed-1"), 0,
         env={"COLUMNS": "80"}, check=fits_columns(80, "seed-0", "seed-1")),
    Case("cache-clear-still-clears-a-real-cache", "usability", cache_copy,
         ("cache", "clear", "--cache-dir", "cache", "--kind", "features"), 0, check=cleared("cache/features"),
         note="the guard against the lost cases' fix refusing transferkit's own cache"),
    # a mistyped option or value was Click's usage box (several lines, no 'error:'): now one line like the rest
    Case("typed-option-not-a-number", "usability", data, ("train", "data", "--epochs", "abc", "--out", "run"), 2,
         says=(r"--epochs", r"--help"), absent=("run",)),
    Case("unknown-option", "usability", data, ("train", "data", "--epoch", "3", "--out", "run"), 2,
         says=(r"No such option: --epoch", r"--epochs"), absent=("run",)),
    Case("auto-budget-not-a-time", "usability", data, ("auto", "data", "--budget", "soon", "--out", "run"), 2,
         says=(r"--budget",), absent=("run",)),
    Case("auto-budget-infinite", "usability", data, ("auto", "data", "--budget", "inf", "--out", "run"), 2,
         says=(r"--budget",), absent=("run",)),
]

CASES = [*SECURITY, *LOST, *TRACEBACK, *SILENT, *USABILITY]
# issue 23's cases, one module per area (each module's CASES hold every class)
for area in (corpus_int8, corpus_runfiles, corpus_adaptbounds, corpus_concurrency, corpus_serve):
    CASES += area.CASES
assert len({case.id for case in CASES}) == len(CASES), "case names must be unique"


# ----------------------------------------------------------------------------------------------------------
# The test: one per case
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def corpus_base(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Base:
    return Base(tmp_path_factory.mktemp("corpus-base"), session_cache)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, tmp_path: Path, corpus_base: Base) -> None:
    reason = case.skip() if case.skip else None
    if reason:
        pytest.skip(reason)
    failure = None
    try:
        run_case(case, tmp_path, corpus_base)
    except AssertionError as exc:
        failure = str(exc)
    finally:
        for folder, dirs, _ in os.walk(tmp_path):  # let pytest remove what a case made read-only
            for name in dirs:
                path = Path(folder) / name
                if not path.is_symlink():
                    path.chmod(0o755)
    if failure:
        pytest.fail(failure, pytrace=False)


# ----------------------------------------------------------------------------------------------------------
# python tests/test_bad_inputs.py --summary: cases, passing and failing per class, and what each failure does
# ----------------------------------------------------------------------------------------------------------
class Outcomes:
    def __init__(self) -> None:
        self.found: dict[str, tuple[str, str]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":
            case_id = report.nodeid.rpartition("[")[2].rstrip("]")
            text = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr or "")
            self.found.setdefault(case_id, (report.outcome, text.strip().splitlines()[-1] if text.strip() else ""))


def print_summary(extra_args: list[str]) -> int:
    outcomes = Outcomes()
    code = pytest.main([__file__, "-q", "-p", "no:cacheprovider", "--no-header", *extra_args], plugins=[outcomes])
    by_id = {case.id: case for case in CASES}
    print(f"\n{'class':<11}{'cases':>7}{'passing':>9}{'failing':>9}{'skipped':>9}")
    totals = [0, 0, 0, 0]
    for kind in KINDS:
        results = [outcomes.found.get(c.id, ("not run", ""))[0] for c in CASES if c.kind == kind]
        row = [len(results), results.count("passed"), results.count("failed"), results.count("skipped")]
        totals = [a + b for a, b in zip(totals, row)]
        print(f"{kind:<11}" + "".join(f"{n:>{w}}" for n, w in zip(row, (7, 9, 9, 9))))
    print(f"{'total':<11}" + "".join(f"{n:>{w}}" for n, w in zip(totals, (7, 9, 9, 9))))
    failing = [(cid, text) for cid, (outcome, text) in outcomes.found.items() if outcome == "failed"]
    if failing:
        print("\nfailing:")
        for cid, text in sorted(failing, key=lambda f: KINDS.index(by_id[f[0]].kind) if f[0] in by_id else 9):
            print(f"  {cid}: {text}")
    return int(code)


def show(case_ids: list[str]) -> int:
    """Run the named cases (no pytest) and print what each did: for whoever is fixing one."""
    import tempfile

    from corpus_cases import execute

    by_id = {case.id: case for case in CASES}
    with tempfile.TemporaryDirectory(prefix="tk-corpus-") as scratch:
        root = Path(scratch)
        cache = Path(os.environ.get("TRANSFERKIT_CACHE") or root / "cache")
        (root / "base").mkdir()
        base = Base(root / "base", cache)
        for case_id in case_ids:
            case = by_id[case_id]
            tmp = root / case_id
            tmp.mkdir()
            proc, problems = execute(case, tmp, base)
            verdict = f"FAIL: {'; '.join(problems)}" if problems else "PASS"
            print(f"== {case_id}: {verdict}\n$ transferkit {' '.join(case.argv)}\nexit {proc.returncode}\n"
                  f"-- stdout --\n{proc.stdout[-2000:]}-- stderr --\n{proc.stderr[-3000:]}")
    return 0


if __name__ == "__main__":
    if "--summary" in sys.argv:
        sys.exit(print_summary([a for a in sys.argv[1:] if a != "--summary"]))
    if "--show" in sys.argv:
        sys.exit(show([a for a in sys.argv[1:] if a != "--show"]))
    sys.exit("usage: python tests/test_bad_inputs.py --summary [pytest options] | --show CASE_ID ...")
