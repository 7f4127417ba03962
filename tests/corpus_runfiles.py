"""Bad-input cases of issue 23 (area: runfiles), gathered into tests/test_bad_inputs.py's corpus.

Every file of a run folder is untrusted input (a run is copied, downloaded, shared): no stored path is written
to, no callback of a stored config touches a database, no field exhausts memory or ends in a traceback, and a
tampered copy of a run cannot change what the untouched run reads from the shared cache.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Callable

from corpus_cases import GiB, Case, Workspace, run_cli

DAMAGED = r"damaged run file"


# ----------------------------------------------------------------------------------------------------------
# Setups
# ----------------------------------------------------------------------------------------------------------
def prepared(ws: Workspace, artefact: str = "image_run", rel: str = "run") -> Path:
    """A copy of a session run, a data folder, an image and a text file beside it."""
    run = ws.copy(artefact, rel)
    if not ws.path("data").exists():
        ws.images("data")
        ws.image("x.png")
    return run


def edit(path: Path, change: Callable[[Any], Any] | dict[str, Any]) -> None:
    data = json.loads(path.read_text())
    data = change(data) if callable(change) else {**data, **change}
    path.write_text(json.dumps(data))


def tampered(file: str, change: Callable[[Any], Any] | dict[str, Any], artefact: str = "image_run"):
    """run/FILE of a copy of ``artefact`` changed: a dict updates its object, a function replaces it."""
    def setup(ws: Workspace) -> None:
        edit(prepared(ws, artefact) / file, change)
    return setup


def config_line(field: str, value: str, artefact: str = "image_run", extra: dict[str, str] | None = None):
    """run/config.yaml with ``field: value`` (and ``extra`` fields) written over what it held."""
    def setup(ws: Workspace) -> None:
        config = prepared(ws, artefact) / "config.yaml"
        text = config.read_text()
        for key, new in {field: value, **(extra or {})}.items():
            text = re.sub(rf"(?m)^{key}:.*$", f"{key}: {new}".replace("{tmp}", str(ws.tmp)), text)
        config.write_text(text)
        victim = ws.path("victim")  # a folder of the user's that the run's config names
        victim.mkdir(exist_ok=True)
        (victim / "notes.txt").write_text("mine")
        study_like(ws.path("other.db"))
    return setup


def study_like(path: Path) -> None:
    """A SQLite database of the user's (not a study)."""
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS mine (x)")


def prune_callback(tmp: str = "{tmp}") -> str:
    return f'["optuna-prune:storage=sqlite:///{tmp}/other.db,study=s,trial=0"]'


def foreign_finetune_config(ws: Workspace) -> None:
    """A config.yaml from someone else's run: fine-tuning, reporting to a database by its callback."""
    ws.images("data")
    ws.write("config.yaml", f"data: data\nbackbone: efficientnet_lite0\nstrategy: finetune\nseed: 0\nepochs: 1\n"
                            f"batch_size: 4\nworkers: 0\nimage_size: 32\naugment: none\nengine: onnx\n"
                            f"callbacks: {prune_callback(str(ws.tmp))}\n")
    study_like(ws.path("other.db"))


def tables(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return len(connection.execute("SELECT name FROM sqlite_master").fetchall())


def db_untouched(ws: Workspace, proc: subprocess.CompletedProcess) -> None:
    assert tables(ws.path("other.db")) == 1, f"other.db now has {tables(ws.path('other.db'))} entries (1 before)"


# ----------------------------------------------------------------------------------------------------------
# Poisoning: a tampered copy predicts first (its features reach the cache), then the untouched run
# ----------------------------------------------------------------------------------------------------------
def poisoning(artefact: str, file: str, change: Callable[[Any], Any] | dict[str, Any], item: str, twin: str):
    """The untouched run answers for ``twin`` (the same input under another name: its cache entry is another),
    then a tampered copy predicts ``item``; the case predicts ``item`` with the untouched run."""
    def setup(ws: Workspace) -> None:
        prepared(ws, artefact)
        edit(prepared(ws, artefact, "copy") / file, change)
        ws.image("fresh.png", (40, 90, 200))  # new images: no cache holds them yet
        ws.image("twin.png", (40, 90, 200))
        before = run_cli(["predict", "run", twin, "--json"], ws.tmp, ws.base.env())
        ws.write("before.txt", before.stdout)
        run_cli(["predict", "copy", item, "--json"], ws.tmp, ws.base.env())
    return setup


def same_as_before(ws: Workspace, proc: subprocess.CompletedProcess) -> None:
    """The untouched run's answer is the one it gave before the tampered copy ran."""
    got, expected = probabilities(proc.stdout), probabilities(ws.path("before.txt").read_text())
    assert expected and got == expected, f"the untouched run now says {got}, before the copy ran {expected}"


def probabilities(stdout: str) -> list[Any]:
    records = [json.loads(line) for line in stdout.splitlines() if line.strip().startswith("{")]
    return [[(p["label"], round(p["probability"], 4)) for p in r.get("predictions", [])] for r in records]


def uppercase_blind(tokenizer: dict[str, Any]) -> dict[str, Any]:
    tokenizer["normalizer"]["lowercase"] = False  # "WARM" is no longer "warm": other token ids, other features
    return tokenizer


TOKENIZER = "tokenizer/tokenizer.json"


def checkpoint(change: Callable[[dict[str, Any]], None]):
    """A copy of the fine-tuned run whose last checkpoint's JSON tree (its non-tensor values) is changed."""
    def setup(ws: Workspace) -> None:
        from safetensors import safe_open
        from safetensors.numpy import save_file

        path = prepared(ws, "ft_run") / "checkpoints" / "last.safetensors"
        with safe_open(str(path), framework="numpy") as handle:
            meta, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
        tree = json.loads(meta["tree"])
        change(tree)
        save_file(tensors, str(path), metadata={**meta, "tree": json.dumps(tree)})
    return setup


def model_meta(**changes: str):
    """A copy of the image probe whose model.safetensors metadata is changed (the tensors kept)."""
    def setup(ws: Workspace) -> None:
        from safetensors import safe_open
        from safetensors.numpy import save_file

        path = prepared(ws) / "model.safetensors"
        with safe_open(str(path), framework="numpy") as handle:
            meta, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
        save_file(tensors, str(path), metadata={**meta, **changes})
    return setup


def swap_two_tensors(tree: dict[str, Any]) -> None:
    """The first two model tensors of different shapes trade places (a checkpoint of another network)."""
    model = tree["model"]
    first, second = [key for key in model if key.endswith("weight")][:2]
    model[first], model[second] = model[second], model[first]


def unfinished_with_bad_rng(tree: dict[str, Any]) -> None:
    tree["state"]["epoch"] = 0  # not finished: it resumes, and reads the generators' state
    tree["rng"] = {"python": 1}


RESUME = ("train", "--config", "run/checkpoints/config.yaml", "--resume")


# ----------------------------------------------------------------------------------------------------------
# The cases
# ----------------------------------------------------------------------------------------------------------
PREDICT = ("predict", "run", "x.png")
IMAGE_COMMANDS = {"predict": PREDICT, "evaluate": ("evaluate", "run", "data"), "report": ("report", "run"),
                  "export": ("export", "run", "--out", "exported")}
PREPROCESSING_FIELDS = {  # field: (bad value, what the message names)
    "mean-string": ({"mean": "abc"}, "mean"),
    "mean-two": ({"mean": [0.5, 0.5]}, "mean"),
    "std-zero": ({"std": [0, 0.5, 0.5]}, "std"),
    "interpolation": ({"interpolation": "sinc"}, "interpolation"),
    "input-size-zero": ({"input_size": 0}, "input_size"),
    "input-size-string": ({"input_size": "32"}, "input_size"),
    "crop-negative": ({"crop_pct": -1}, "crop_pct"),
    "crop-nan": ({"crop_pct": float("nan")}, "crop_pct"),
    "unknown-field": ({"resize": "fit"}, "resize"),
    "missing-field": (lambda d: {k: v for k, v in d.items() if k != "mean"}, "mean"),
    "not-an-object": (lambda d: [d], "object"),
}
TEXT_FIELDS = {
    "pooling": ({"pooling": "max"}, "pooling"),
    "layers-string": ({"layers": "abc"}, "layers"),
    "max-length-huge": ({"max_length": 10 ** 9}, "max_length"),
    "normalize-word": ({"normalize": "yes"}, "normalize"),
}
METRICS = {  # name: (change, command, what the message names)
    "probe-string-predict": ({"probe": "abc"}, PREDICT, "probe"),
    "l2-string-predict": ({"probe": {"l2": "big"}}, PREDICT, "l2"),
    "ragged-confusion-report": (lambda m: {**m, "val": {**m["val"], "confusion_matrix": [[1, 0], [1]]}},
                                ("report", "run"), "confusion_matrix"),
    "val-string-compare": ({"val": "good"}, ("compare", "run"), "val"),
    "history-rows-report": ({"history": [1, 2]}, ("report", "run"), "history"),
    "seconds-string-report": ({"train_seconds": "fast"}, ("report", "run"), "train_seconds"),
    "accuracy-string-serve": (lambda m: {**m, "val": {**m["val"], "accuracy": "high"}},
                              ("serve", "run", "--port", "0"), "accuracy"),  # refused before it listens
}

CASES: list[Case] = [
    # security: a stored path is never written to; a stored callback never touches a database; memory bounded
    *(Case(f"run-cache-dir-{name}", "security", config_line("cache_dir", "{tmp}/victim"), argv, (0, 2),
           warns=False, keep=("victim",), absent=("victim/engines", "victim/features"),
           note="the run's cache_dir is a hint: predict writes to the default cache (or --cache-dir)")
      for name, argv in (("predict", PREDICT), ("evaluate", ("evaluate", "run", "data")))),
    *(Case(f"run-callback-db-{name}", "security", config_line("callbacks", prune_callback()), argv, 0,
           warns=False, keep=("other.db",), check=db_untouched)
      for name, argv in (("predict", PREDICT), ("evaluate", ("evaluate", "run", "data")),
                         ("compare", ("compare", "run")))),
    Case("foreign-config-callback-db", "security", foreign_finetune_config,
         ("train", "--config", "config.yaml", "--out", "out"), 2, says=(r"optuna-prune", r"other\.db"),
         keep=("other.db",), check=db_untouched, note="refused before optuna adds its tables to the user's database"),
    Case("preprocessing-input-size-huge", "security", tampered("preprocessing.json", {"input_size": 60000}),
         PREDICT, 2, says=(DAMAGED, r"preprocessing\.json", r"input_size"), address_space=4 * GiB),
    Case("text-layers-huge", "security", tampered("preprocessing.json", {"layers": 10 ** 9}, "text_run"),
         ("predict", "run", "a warm film"), 2, says=(DAMAGED, r"layers"), address_space=4 * GiB),
    # traceback: each field of each file, each command that reads it
    *(Case(f"preprocessing-{name}", "traceback", tampered("preprocessing.json", change), PREDICT, 2,
           says=(DAMAGED, r"preprocessing\.json", what)) for name, (change, what) in PREPROCESSING_FIELDS.items()),
    *(Case(f"preprocessing-interpolation-{name}", "traceback", tampered("preprocessing.json", {"interpolation": 5}),
           argv, 2, says=(DAMAGED, r"interpolation"), absent=("exported",))
      for name, argv in IMAGE_COMMANDS.items() if name != "predict"),
    *(Case(f"text-preprocessing-{name}", "traceback", tampered("preprocessing.json", change, "text_run"),
           ("predict", "run", "a warm film"), 2, says=(DAMAGED, what)) for name, (change, what) in TEXT_FIELDS.items()),
    *(Case(f"metrics-{name}", "traceback", tampered("metrics.json", change), argv, 2, says=(DAMAGED, what))
      for name, (change, argv, what) in METRICS.items()),
    Case("checkpoint-epoch-string", "traceback", checkpoint(lambda t: t["state"].update(epoch="x")), RESUME, 2,
         says=(DAMAGED, r"last\.safetensors", r"epoch")),
    Case("checkpoint-state-unknown-field", "traceback", checkpoint(lambda t: t["state"].update(speed=1)), RESUME, 2,
         says=(DAMAGED, r"speed")),
    Case("checkpoint-rng-damaged", "traceback", checkpoint(unfinished_with_bad_rng), RESUME, 2,
         says=(DAMAGED, r"rng")),
    Case("checkpoint-model-swapped", "traceback", checkpoint(swap_two_tensors), RESUME, 2,
         says=(DAMAGED, r"last\.safetensors")),
    Case("model-arch-swapped", "traceback", model_meta(arch="tf_efficientnet_lite1"), PREDICT, 2,
         says=(DAMAGED, r"model\.safetensors", r"tf_efficientnet_lite1"),
         note="the tensors are rebuilt into the architecture the metadata names, and do not fit it"),
    Case("model-num-classes-vs-head", "silent", model_meta(num_classes="3"), PREDICT, 2,
         says=(DAMAGED, r"num_classes")),
    Case("classes-object-label", "traceback", tampered("classes.json", lambda c: [{"a": 1}, "red"]), PREDICT, 2,
         says=(DAMAGED, r"classes\.json")),
    Case("classes-too-many", "security", tampered("classes.json", lambda c: [str(i) for i in range(200_000)]),
         ("compare", "run"), 2, says=(r"classes\.json",)),
    # silent: files that disagree are refused, never used with one of them
    Case("preprocessing-mean-vs-model", "silent", tampered("preprocessing.json", {"mean": [0.4, 0.4, 0.4]}),
         PREDICT, 2, says=(DAMAGED, r"mean", r"disagree")),
    Case("preprocessing-size-vs-config", "silent", tampered("preprocessing.json", {"input_size": 64}), PREDICT, 2,
         says=(DAMAGED, r"input_size", r"image_size")),
    Case("text-max-length-vs-config", "silent", tampered("preprocessing.json", {"max_length": 64}, "text_run"),
         ("predict", "run", "a warm film"), 2, says=(DAMAGED, r"max_length")),
    Case("text-pooling-vs-model", "silent", tampered("preprocessing.json", {"pooling": "cls"}, "text_run"),
         ("predict", "run", "a warm film"), 2, says=(DAMAGED, r"pooling")),
    # silent: a tampered copy predicts first; the untouched run's answers are its own
    Case("poisoned-cache-interpolation", "silent",
         poisoning("image_run", "preprocessing.json", {"interpolation": "nearest"}, "fresh.png", "twin.png"),
         ("predict", "run", "fresh.png", "--json"), 0, warns=False, check=same_as_before,
         note="the copy's features are cached under its own content fingerprint"),
    Case("poisoned-cache-tokenizer", "silent",
         poisoning("text_run", TOKENIZER, uppercase_blind, "A WARM AND WONDERFUL FILM", "a warm and wonderful film"),
         ("predict", "run", "A WARM AND WONDERFUL FILM", "--json"), 0, warns=False, check=same_as_before),
]
