"""Bad-input cases of issue 23 (area: concurrency), gathered into tests/test_bad_inputs.py's corpus: two runs in
one folder, another application's study database, a storage URL's password, one text example per class, and
messages that named the wrong cause (--from's classes, a teacher that is not a run, a text given to an image
run, a device or pipe given as a file, resuming what tune and adapt cannot resume)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time

from corpus_cases import FAST_FINETUNE, TEXT_ROWS, Case, Workspace, csv_text

PROBE = ("--image-size", "32", "--engine", "onnx")
TEXT = ("--max-length", "16", "--engine", "onnx")
FINETUNE = (*FAST_FINETUNE, "--engine", "onnx")
SECRET = "s3cretPW"  # the password of the storage URLs below: never in any output
HOLD = """
import sys, time
from transferkit.runs.lock import hold_run_folder
with hold_run_folder(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the case's workspace is gone (the pipe closes), at most the case's runtime
"""


# ----------------------------------------------------------------------------------------------------------
# Setups
# ----------------------------------------------------------------------------------------------------------
def run_held_by_another_process(ws: Workspace) -> None:
    """run/ (a finished probe) whose lock another live process holds, as a run training in it would."""
    ws.copy("image_run", "run")
    ws.images("data")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(ws.path("run"))], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=ws.base.env())
    assert holder.stdout.readline().strip() == "held", "the holding process did not take the lock"
    ws.holder = holder  # kept with the workspace: its stdin closes (and it ends) when the case is done


def stale_lock_of_a_killed_run(ws: Workspace) -> None:
    """The lock file a SIGKILLed run left beside run/: its record names a process that is gone."""
    ws.images("data")
    ws.write(".run.lock", json.dumps({"pid": 999999, "host": "elsewhere", "started": time.time() - 60,
                                      "command": "transferkit train data --out run"}))


def app_database(ws: Workspace, tables: tuple[str, ...] = ("users", "orders")) -> None:
    """app.db: another application's SQLite database (its own tables and a row each)."""
    ws.images("data")
    with sqlite3.connect(ws.path("app.db")) as db:
        for table in tables:
            db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT)")
            db.execute(f"INSERT INTO {table} (name) VALUES ('kept')")
    db.close()


def app_database_with_trials(ws: Workspace) -> None:
    app_database(ws, ("trials",))  # the name of an Optuna table, in an application's own schema


def one_example_per_class(ws: Workspace) -> None:
    ws.write("t.csv", csv_text([("a wonderful and warm film", "pos"), ("a dull and tedious film", "neg")]))
    ws.write("v.csv", csv_text(TEXT_ROWS[:2] + TEXT_ROWS[6:8]))


def renamed_classes(ws: Workspace) -> None:
    """run/ knows blue and red; the new data names the same colours navy and crimson."""
    ws.copy("image_run", "run")
    ws.images("data", classes={"navy": (30, 30, 200), "crimson": (200, 30, 30)})


def image_run_and_colour_texts(ws: Workspace) -> None:
    """An image run (classes blue, red) and a text table with those labels."""
    ws.copy("image_run", "run")
    ws.write("t.csv", csv_text([(text, "red" if label == "pos" else "blue") for text, label in TEXT_ROWS]))


def image_run_and_texts(ws: Workspace) -> None:
    ws.copy("image_run", "run")
    ws.write("t.csv", csv_text(TEXT_ROWS))


def data_and_texts(ws: Workspace) -> None:
    ws.images("data")
    ws.write("t.csv", csv_text(TEXT_ROWS))


def text_run_and_images(ws: Workspace) -> None:
    ws.copy("text_run", "run")
    ws.images("data")


def image_run_and_fifo(ws: Workspace) -> None:
    ws.copy("image_run", "run")
    os.mkfifo(ws.path("x.png"))  # opening it for reading would wait for a writer for ever


def text_run_and_fifo(ws: Workspace) -> None:
    ws.copy("text_run", "run")
    os.mkfifo(ws.path("t.csv"))


def fifo_csv(ws: Workspace) -> None:
    os.mkfifo(ws.path("t.csv"))


def image_run_and_socket(ws: Workspace) -> None:
    ws.copy("image_run", "run")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(ws.path("x.png")))
    ws.socket = server


def image_run(ws: Workspace) -> None:
    ws.copy("image_run", "run")


def text_run(ws: Workspace) -> None:
    ws.copy("text_run", "run")


def data(ws: Workspace) -> None:
    ws.images("data")


def unfinished_finetune(ws: Workspace) -> None:
    """run/ holds only the checkpoints of an interrupted fine-tune (what Ctrl-C in tune's final fit leaves)."""
    ws.images("data")
    ws.copy("ft_run", "ft")
    os.makedirs(ws.path("run"))
    os.rename(ws.path("ft/checkpoints"), ws.path("run/checkpoints"))


def no_fifo_support() -> str | None:
    return None if hasattr(os, "mkfifo") else "no named pipes here"


def silent_stdout(*secrets: str):
    def check(ws: Workspace, proc) -> None:
        assert not any(s in proc.stdout for s in secrets), "the password is on stdout"
    return check


def tables_kept(ws: Workspace, proc) -> None:
    with sqlite3.connect(ws.path("app.db")) as db:
        names = sorted(row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    db.close()
    assert names in (["orders", "users"], ["trials"]), f"app.db now holds the tables {names}"


# ----------------------------------------------------------------------------------------------------------
# The cases
# ----------------------------------------------------------------------------------------------------------
STORAGE = ("tune", "data", *PROBE, "--trials", "1", "--out", "run", "--storage")
PASSWORD_URLS = {
    "server": f"postgresql://bob:{SECRET}@127.0.0.1:9/app",  # no driver, or nothing listening: an error either way
    "comma": f"mysql://bob:{SECRET}@127.0.0.1:9/a,b",
    "no-scheme": f"bob:{SECRET}@127.0.0.1/app",
    "sqlite-folder": f"sqlite://bob:{SECRET}@/nowhere/study.db",
}

LOCKS = [
    Case("second-run-in-a-folder-being-written", "lost", run_held_by_another_process,
         ("train", "data", *PROBE, "--out", "run", "--overwrite"), 2,
         says=(r"^error: run: another run is writing this folder", r"process \d+", r"started \d{4}-",
               r"--out"), keep=("run",),
         note="a second run in a folder a live run holds is refused before any work, naming the holder"),
    Case("second-finetune-in-a-folder-being-written", "lost", run_held_by_another_process,
         ("train", "data", "--strategy", "finetune", *FINETUNE, "--out", "run", "--overwrite"), 2,
         says=(r"another run is writing this folder", r"process \d+"), keep=("run",), max_seconds=60),
    Case("second-tune-in-a-folder-being-written", "lost", run_held_by_another_process,
         ("tune", "data", *PROBE, "--trials", "1", "--storage", "sqlite:///study.db", "--out", "run",
          "--overwrite"), 2, says=(r"another run is writing this folder",), keep=("run",), absent=("study.db",)),
    Case("stale-lock-of-a-killed-run", "usability", stale_lock_of_a_killed_run,
         ("train", "data", *PROBE, "--out", "run"), 0, warns=False, absent=(".run.lock",),
         note="a lock file a killed run left names no live holder: the run goes ahead (and removes it)"),
]

DATABASES = [
    Case("tune-into-another-applications-database", "silent", app_database, (*STORAGE, "sqlite:///app.db"), 2,
         says=(r"--storage sqlite:///app\.db", r"not Optuna's \(orders, users\)", r"database of its own"),
         keep=("app.db",), absent=("run",), check=tables_kept),
    Case("tune-into-a-database-with-a-trials-table", "lost", app_database_with_trials,
         (*STORAGE, "sqlite:///app.db"), 2, says=(r"not Optuna's \(trials\)",), keep=("app.db",), absent=("run",),
         check=tables_kept),
    *[Case(f"tune-storage-password-{name}", "security", data, (*STORAGE, url), 2,
           says=(r"--storage \S*bob:\*\*\*@",), avoid=(SECRET,), check=silent_stdout(SECRET),
           note="a storage URL's password is masked in every message")
      for name, url in PASSWORD_URLS.items()],
]

SINGLE_EXAMPLES = [
    Case("text-one-example-per-class-no-validation", "silent", one_example_per_class,
         ("train", "t.csv", *TEXT, "--val-fraction", "0", "--out", "run"), 0,
         says=(r"single example", r"too few", r"'neg' \(line 3\)")),
    Case("text-one-example-per-class-own-validation", "silent", one_example_per_class,
         ("train", "t.csv", *TEXT, "--val-data", "v.csv", "--out", "run"), 0, says=(r"single example", r"too few")),
]

MESSAGES = [
    Case("from-run-with-renamed-classes", "usability", renamed_classes,
         ("train", "data", *PROBE, "--from", "run", "--out", "new"), 2,
         says=(r"--from \S*run: the run knows class\(es\) blue, red, which the new data lacks",
               r"\(it has crimson, navy\)"),
         absent=("new",)),
    Case("from-run-with-renamed-classes-finetune", "usability", renamed_classes,
         ("train", "data", "--strategy", "finetune", *FINETUNE, "--from", "run", "--out", "new"), 2,
         says=(r"the run knows class\(es\) blue, red", r"it has crimson, navy"), absent=("new",)),
    Case("from-run-of-the-other-modality", "usability", image_run_and_texts,
         ("train", "t.csv", *TEXT, "--from", "run", "--out", "new"), 2,
         says=(r"--from \S*run: the run was trained on another kind of data", r"text data"),
         avoid=(r"load_classifier",), absent=("new",)),
    Case("distill-teacher-a-data-folder", "usability", data,
         ("train", "data", "--strategy", "finetune", *FINETUNE, "--method", "distill:teacher=data", "--out", "run"),
         2, says=(r"teacher=data: a folder, but not a finished run folder",), avoid=(r"timm",), absent=("run",)),
    Case("distill-teacher-a-file", "usability", data_and_texts,
         ("train", "data", "--strategy", "finetune", *FINETUNE, "--method", "distill:teacher=t.csv", "--out", "run"),
         2, says=(r"teacher=t\.csv: a file, but not a finished run folder",), avoid=(r"timm",), absent=("run",)),
    Case("distill-image-teacher-for-text", "usability", image_run_and_colour_texts,
         ("train", "t.csv", "--strategy", "finetune", "--epochs", "1", "--batch-size", "4", *TEXT, "--method",
          "distill:teacher=run", "--out", "new"), 2,
         says=(r"teacher run was trained on image data, and this run's data is text",),
         avoid=(r"no such file", r"read 0 of"), absent=("new",)),
    Case("predict-image-run-given-a-sentence", "usability", image_run,
         ("predict", "run", "a dog running on the beach"), 2,
         says=(r"a dog running on the beach: no such file or folder; this run classifies images",)),
    Case("evaluate-image-run-on-a-text-table", "usability", image_run_and_texts, ("evaluate", "run", "t.csv"), 2,
         says=(r"t\.csv: text data, which this model \(trained on image data\) does not read",)),
    Case("evaluate-text-run-on-an-image-folder", "usability", text_run_and_images, ("evaluate", "run", "data"), 2,
         says=(r"data: image data, which this model \(trained on text data\) does not read",)),
    Case("tune-into-an-unfinished-finetune", "usability", unfinished_finetune,
         ("tune", "data", *PROBE, "--trials", "1", "--storage", "sqlite:///study.db", "--out", "run"), 2,
         says=(r"run: holds an unfinished training run; pass --overwrite to start again",), avoid=(r"--resume",),
         keep=("run",)),
    Case("adapt-into-an-unfinished-finetune", "usability", unfinished_finetune,
         ("adapt", "data", "--target", "data", "--candidate", "source-only", *FINETUNE, "--out", "run"), 2,
         says=(r"holds an unfinished training run; pass --overwrite",), avoid=(r"--resume",), keep=("run",)),
]

SPECIAL_FILES = [
    Case("predict-dev-zero", "usability", image_run, ("predict", "run", "/dev/zero"), 2,
         says=(r"/dev/zero: not a regular file",), max_seconds=60),
    Case("predict-dev-null", "usability", image_run, ("predict", "run", "/dev/null"), 2,
         says=(r"/dev/null: not a regular file",)),
    Case("predict-fifo", "usability", image_run_and_fifo, ("predict", "run", "x.png"), 2,
         says=(r"x\.png: not a regular file",), skip=no_fifo_support, timeout=60),
    Case("predict-socket", "usability", image_run_and_socket, ("predict", "run", "x.png"), 2,
         says=(r"x\.png: not a regular file",)),
    Case("predict-text-run-dev-zero", "usability", text_run, ("predict", "run", "/dev/zero"), 2,
         says=(r"/dev/zero: not a regular file",), timeout=60),
    Case("predict-text-run-fifo", "usability", text_run_and_fifo, ("predict", "run", "t.csv"), 2,
         says=(r"t\.csv: not a regular file",), skip=no_fifo_support, timeout=60),
    Case("evaluate-text-run-fifo", "usability", text_run_and_fifo, ("evaluate", "run", "t.csv"), 2,
         says=(r"t\.csv: not a regular file",), skip=no_fifo_support, timeout=60),
    Case("train-on-a-fifo-table", "usability", fifo_csv, ("train", "t.csv", *TEXT, "--out", "run"), 2,
         says=(r"t\.csv: not a regular file",), skip=no_fifo_support, timeout=60),
    Case("train-on-dev-zero", "usability", data, ("train", "/dev/zero", "--out", "run"), 2,
         says=(r"/dev/zero: not a regular file",)),
    Case("rank-dev-zero", "usability", data, ("rank", "/dev/zero"), 2, says=(r"/dev/zero: not a regular file",)),
    Case("val-data-dev-null", "usability", data, ("train", "data", *PROBE, "--val-data", "/dev/null", "--out", "run"),
         2, says=(r"/dev/null: not a regular file",)),
    Case("text-val-data-a-folder", "usability", data_and_texts,
         ("train", "t.csv", *TEXT, "--val-data", "data", "--out", "run"), 2, says=(r"data: is a folder, not a file",)),
    Case("evaluate-image-run-dev-null", "usability", image_run, ("evaluate", "run", "/dev/null"), 2,
         says=(r"/dev/null: not a regular file",)),
    Case("weights-dev-null", "usability", data, ("train", "data", *PROBE, "--weights", "/dev/null", "--out", "run"),
         2, says=(r"/dev/null: not a regular file",)),
    Case("target-a-file", "usability", data_and_texts,
         ("train", "data", *PROBE, "--target", "t.csv", "--out", "run"), 2,
         says=(r"t\.csv: is a file, not a target folder",)),
]

CASES: list[Case] = [*LOCKS, *DATABASES, *SINGLE_EXAMPLES, *MESSAGES, *SPECIAL_FILES]
