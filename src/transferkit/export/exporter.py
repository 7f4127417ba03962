"""``export_run``: a run folder as one deployable model, checked against the run's own torch model.

The export folder holds::

    model.onnx | model.pt   the whole model: preprocessing that is arithmetic (normalisation) folded in, the
                            backbone (adapters merged), the head and a softmax; a dynamic batch axis (text:
                            and sequence axis). Output ``probabilities`` [batch, classes]
    preprocessing.json      the run's preprocessing, the model's inputs and how to prepare them
    classes.json            the labels, in output order
    tokenizer/              a text run's tokenizer files
    parity.json             max |difference| of probabilities and top-1 agreement with the run's torch model on
                            the run's validation data (or --data)

The folder is written beside its target and renamed into place, so a failed export leaves nothing half done.
A TorchScript file is code as much as data: it is written here and loaded back only to check this export;
``transferkit serve`` never loads one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort
import torch

from transferkit import __version__
from transferkit.atomic import reason
from transferkit.errors import RunDirError, TransferkitError, arg, first_line
from transferkit.estimators import load_classifier
from transferkit.estimators.core import TransferClassifier
from transferkit.estimators.heldout import capped, heldout_split
from transferkit.export.model import ExportedClassifier, whole_model
from transferkit.modalities.base import MODEL_OUTPUT, ModelInputs
from transferkit.progress import log
from transferkit.runs.folders import is_run_folder
from transferkit.runs.rundir import read_run, swap_into_place

PARITY_ITEMS = 512  # validation items the parity check runs through both models (spread over the split)
TOLERANCE = 1e-4  # max |difference| of probabilities an export may have from the torch model to be "ok"


@dataclass
class ExportResult:
    folder: Path
    model: Path
    parity: dict[str, Any]


def export_run(run: str | Path, fmt: str = "onnx", out: str | Path = "export", data: Any = None,
               overwrite: bool = False, limit: int = PARITY_ITEMS) -> ExportResult:
    """Export the run at ``run`` as ``fmt`` (onnx | torchscript) into the folder ``out``, with a parity report
    on the run's validation data (``data``: other labelled data)."""
    if fmt not in FORMATS:
        raise TransferkitError(f"{arg('format', fmt)}: not a format transferkit exports; choose "
                               f"{' or '.join(FORMATS)}")
    run, out = Path(run), Path(out)
    check_export_folder(run, out, overwrite)
    clf = load_classifier(run)
    clf.verbose = False
    adapter = clf.modality.inputs(clf)
    split, source = heldout_split(clf, data)  # before the export: missing data is said at once
    split = capped(split, limit)
    target = Path(os.path.abspath(out))
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        staging.mkdir(parents=True)
        model = whole_model(clf)
        log(f"exporting {run} as {fmt} ...")
        start = time.perf_counter()
        name, write = FORMATS[fmt]
        exported = write_model(write, model, adapter, staging / name, fmt, clf)
        seconds = time.perf_counter() - start
        write_files(staging, clf, adapter, read_run(run).preprocessing, fmt, run)
        parity = check_parity(clf, adapter, model, exported, split, source)
        parity.update(format=fmt, model=name, run=str(run), export_seconds=round(seconds, 3))
        (staging / "parity.json").write_text(json.dumps(parity, indent=1))
        swap_into_place(staging, target)
    except OSError as exc:
        raise RunDirError(f"{out}: cannot write the export ({reason(exc)}); free some space or choose another "
                          f"{arg('out')}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not parity["ok"]:
        log(f"warning: the export differs from the run's torch model by up to {parity['max_abs_diff']:.3g} in "
            f"probability (tolerance {TOLERANCE:g}); see {out / 'parity.json'}")
    return ExportResult(out, out / name, parity)


def check_export_folder(run: Path, out: Path, overwrite: bool) -> None:
    """``out`` is new, empty, or an earlier export (replaced with ``overwrite``); never the run or inside it."""
    target, source = out.expanduser().resolve(), run.expanduser().resolve()
    if target == source or target.is_relative_to(source) or source.is_relative_to(target):
        raise RunDirError(f"{out}: is the run folder, inside it or around it; choose another {arg('out')} for the "
                          "export, outside the run")
    if is_run_folder(target.parent):  # an entry no run holds would stop that run from being replaced
        raise RunDirError(f"{out}: is inside the run folder {out.parent}; choose another {arg('out')}, outside it")
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a folder; choose another {arg('out')}")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return
    foreign = [name for name in entries if name not in EXPORT_FILES]
    if foreign or "parity.json" not in entries:
        raise RunDirError(f"{out}: holds files that are not a transferkit export ({', '.join((foreign or entries)[:3])}"
                          f"), so it is never replaced; choose another {arg('out')}: a new or empty folder")
    if not overwrite:
        raise RunDirError(f"{out}: already holds an export; pass {arg('overwrite', True)} to replace it, or choose "
                          f"another {arg('out')}")


Predict = Callable[..., np.ndarray]  # the model's input arrays -> probabilities


def write_onnx(model: ExportedClassifier, adapter: ModelInputs, path: Path) -> Predict:
    """Write ``model.onnx``; return it as it will be run: an ONNX Runtime session."""
    adapter.export_onnx(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda *arrays: session.run([MODEL_OUTPUT], dict(zip(adapter.names, arrays)))[0]


def write_torchscript(model: ExportedClassifier, adapter: ModelInputs, path: Path) -> Predict:
    """Write ``model.pt`` (traced); return it loaded back."""
    # tracing warns about Python values it records as constants, and this torch warns that TorchScript is
    # deprecated in favour of torch.export (whose .pt2 files are not what TorchScript runtimes load)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, adapter.example(), check_trace=False)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path))  # the file this process just wrote, never one from elsewhere
    return lambda *arrays: torch_predict(loaded, arrays)


# format -> (file name, writer)
FORMATS: dict[str, tuple[str, Callable[[ExportedClassifier, ModelInputs, Path], Predict]]] = {
    "onnx": ("model.onnx", write_onnx), "torchscript": ("model.pt", write_torchscript)}
EXPORT_FILES = ("preprocessing.json", "classes.json", "parity.json", "tokenizer", *(f for f, _ in FORMATS.values()))


def write_model(write: Callable[[ExportedClassifier, ModelInputs, Path], Predict], model: ExportedClassifier,
                adapter: ModelInputs, path: Path, fmt: str, clf: TransferClassifier) -> Predict:
    """``write``, with an exporter's failure for an architecture said in one line."""
    try:
        return write(model, adapter, path)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporters' errors (torch.export, tracing) have no common type
        others = " or ".join(f for f in FORMATS if f != fmt)
        raise TransferkitError(f"{clf.spec_.name}: the {fmt} export failed ({first_line(exc)}); try "
                               f"{arg('format', others)}") from None


def torch_predict(model: Callable[..., torch.Tensor], arrays: tuple[np.ndarray, ...]) -> np.ndarray:
    with torch.inference_mode():
        return model(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)).float().numpy()


def write_files(folder: Path, clf: TransferClassifier, adapter: ModelInputs, preprocessing: dict[str, Any],
                fmt: str, run: Path) -> None:
    contract = adapter.contract(preprocessing)
    contract["outputs"] = [{"name": MODEL_OUTPUT, "dtype": "float32", "shape": ["batch", len(clf.classes_)],
                            "labels": "classes.json"}]
    contract["export"] = {"format": fmt, "file": FORMATS[fmt][0], "run": str(run), "backbone": clf.spec_.name,
                          "fingerprint": clf.spec_.fingerprint, "transferkit": __version__, "torch": torch.__version__}
    (folder / "preprocessing.json").write_text(json.dumps(contract, indent=1))
    (folder / "classes.json").write_text(json.dumps(list(clf.classes_), indent=1))
    adapter.add_files(folder)


def check_parity(clf: TransferClassifier, adapter: ModelInputs, model: ExportedClassifier, exported: Predict,
                 split: Any, source: str) -> dict[str, Any]:
    """The exported model against the run's torch model on the same prepared inputs."""
    inputs, labels, failed = clf.modality.eval_inputs(clf.spec_, split, clf.config)
    n = len(labels)
    if not n:
        raise TransferkitError(f"{source}: none of its {len(split)} item(s) could be read, so the export cannot be "
                               "checked; pass other labelled data")
    reference = np.zeros((n, len(clf.classes_)), np.float32)
    result = np.zeros_like(reference)
    for rows, arrays in adapter.batches(inputs, clf.config.inference_batch):
        reference[rows] = torch_predict(model, arrays)
        result[rows] = exported(*arrays)
    diff = float(np.abs(reference - result).max())
    return {"data": source, "items": n, "unreadable": len(failed), "reference": "the run's torch model "
            "(model.safetensors: features + head)", "max_abs_diff": diff,
            "top1_agreement": float((reference.argmax(1) == result.argmax(1)).mean()),
            "accuracy": {"torch": float((reference.argmax(1) == labels).mean()),
                         "export": float((result.argmax(1) == labels).mean())},
            "tolerance": TOLERANCE, "ok": diff <= TOLERANCE}
