"""The ``transferkit`` command line. Heavy libraries are imported inside commands, only when needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from transferkit.cli.report import print_report
from transferkit.errors import TransferkitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn a pretrained model into a model for your data.")
cache_app = typer.Typer(no_args_is_help=True, help="Inspect or clear cached engines and features.")
app.add_typer(cache_app, name="cache")


def _console():
    from rich.console import Console

    return Console(highlight=False)


@app.command()
def train(
    data: Annotated[Optional[Path], typer.Argument(help="Image folder: train/<class>/* (+ val/, test/) or <class>/*")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder to write")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Re-run a saved config.yaml (options given here override it)")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="efficientnet_lite0/1/2, timm:<arch>, torchvision:<arch>")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Local .safetensors/.pth weights for the backbone")] = None,
    strategy: Annotated[Optional[str], typer.Option(help="linear-probe")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help="Validation share of train when there is no val/")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Input size (default: the backbone's)")] = None,
    crop_pct: Annotated[Optional[float], typer.Option(help="Centre-crop share (default: the backbone's)")] = None,
    engine: Annotated[Optional[str], typer.Option(help="auto | onnx | torch")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Training batch (default 64 images, 32 text); feature extraction 64")] = None,
    l2: Annotated[Optional[float], typer.Option(help="Head L2 strength (default: chosen on validation)")] = None,
    class_weights: Annotated[Optional[str], typer.Option(help="auto: inverse class frequency")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Feature/engine cache (default: user cache dir)")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Unreadable images are an error, not a warning")] = False,
    text_column: Annotated[Optional[str], typer.Option(help="Text data: the text column (default: text, sentence, review, ...)", rich_help_panel="Text")] = None,
    label_column: Annotated[Optional[str], typer.Option(help="Text data: the label column (default: label, class, target, ...)", rich_help_panel="Text")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Text data: tokens per text (default 128)", rich_help_panel="Text")] = None,
    pooling: Annotated[Optional[str], typer.Option(help="Text data: mean | cls (default: the model's own)", rich_help_panel="Text")] = None,
    feature_layers: Annotated[Optional[int], typer.Option(help="Text data: pool the last N encoder layers and concatenate them (default: 4 for linear-probe, 1 (the sentence embedding) when fine-tuning)", rich_help_panel="Text")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON")] = False,
    # fine-tuning (strategies finetune | last-k:N | gradual | scratch)
    epochs: Annotated[Optional[int], typer.Option(help="Fine-tuning: epochs in total", rich_help_panel="Fine-tuning")] = None,
    freeze_epochs: Annotated[Optional[int], typer.Option(help="gradual: head-only epochs after the probe (default 1 images, 0 text)", rich_help_panel="Fine-tuning")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Base learning rate (head); default sgd 1e-2, adam(w) 3e-4 images / 2e-4 text", rich_help_panel="Fine-tuning")] = None,
    layer_decay: Annotated[Optional[float], typer.Option(help="LR factor per block towards the input (gradual: 0.7 images, 0.8 text)", rich_help_panel="Fine-tuning")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="sgd | adam | adamw", rich_help_panel="Fine-tuning")] = None,
    momentum: Annotated[Optional[float], typer.Option(help="SGD momentum (nesterov)", rich_help_panel="Fine-tuning")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(rich_help_panel="Fine-tuning")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="constant | step | multistep | cosine | one-cycle", rich_help_panel="Fine-tuning")] = None,
    warmup: Annotated[Optional[float], typer.Option(help="Epochs of linear LR warm-up (default 0 images, 0.1 text)", rich_help_panel="Fine-tuning")] = None,
    bn: Annotated[Optional[str], typer.Option(help="BatchNorm statistics: auto | frozen | train", rich_help_panel="Fine-tuning")] = None,
    augment: Annotated[Optional[str], typer.Option(help="none | light | strong (RandAugment + mixup/cutmix)", rich_help_panel="Fine-tuning")] = None,
    label_smoothing: Annotated[Optional[float], typer.Option(rich_help_panel="Fine-tuning")] = None,
    balanced_sampler: Annotated[bool, typer.Option("--balanced-sampler", help="Sample classes equally", rich_help_panel="Fine-tuning")] = False,
    early_stop: Annotated[Optional[int], typer.Option(help="Stop after N epochs without a better --metric", rich_help_panel="Fine-tuning")] = None,
    metric: Annotated[Optional[str], typer.Option(help="val_accuracy | val_macro_f1 | val_loss", rich_help_panel="Fine-tuning")] = None,
    grad_clip: Annotated[Optional[float], typer.Option(help="Clip the gradient norm", rich_help_panel="Fine-tuning")] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help="Accumulate gradients over N batches", rich_help_panel="Fine-tuning")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto | no | bf16 | fp16 (GPU)", rich_help_panel="Fine-tuning")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Decoding workers", rich_help_panel="Fine-tuning")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --out (or the --config's run)", rich_help_panel="Fine-tuning")] = False,
) -> None:
    """Fit a model to DATA and save it as a run folder."""
    from transferkit.train.state import CHECKPOINT_DIR, checkpoint_dir
    from transferkit.config import RunConfig
    from transferkit.runs.rundir import check_writable

    if resume:  # the run folder: --out, else the one the --config belongs to (<out>/config.yaml or checkpoints/)
        if out is None and config is not None:
            out = config.parent.parent if config.parent.name == CHECKPOINT_DIR else config.parent
        if out is None:
            raise TransferkitError("--resume needs --out (the run folder) or --config <out>/config.yaml")
        if config is None or not config.is_file():
            config = checkpoint_dir(out) / "config.yaml"
    base = RunConfig.from_yaml(config) if config else RunConfig()
    overrides: dict[str, Any] = {
        "data": str(data) if data else None, "backbone": backbone, "weights": str(weights) if weights else None,
        "strategy": strategy, "val_fraction": val_fraction, "seed": seed, "image_size": image_size,
        "crop_pct": crop_pct,
        "engine": engine, "batch_size": batch_size, "l2": l2, "class_weights": class_weights,
        "cache_dir": str(cache_dir) if cache_dir else None,
        "text_column": text_column, "label_column": label_column, "max_length": max_length, "pooling": pooling,
        "feature_layers": feature_layers,
        "epochs": epochs, "freeze_epochs": freeze_epochs, "lr": lr, "layer_decay": layer_decay,
        "optimizer": optimizer, "momentum": momentum, "weight_decay": weight_decay, "schedule": schedule,
        "warmup": warmup, "bn": bn, "augment": augment, "label_smoothing": label_smoothing,
        "early_stop": early_stop, "metric": metric, "grad_clip": grad_clip, "grad_accum": grad_accum,
        "precision": precision, "workers": workers,
        # flags only ever switch their setting on (off for the cache); unset, the --config's value stays
        "cache": False if no_cache else None, "strict": strict or None, "balanced_sampler": balanced_sampler or None,
    }
    run_config = base.replace(**{k: v for k, v in overrides.items() if v is not None})
    if not run_config.data:
        raise TransferkitError("no data given: pass a DATA folder or a --config that names one")
    if out is None:
        raise TransferkitError("--out is required: the run folder to write the model to")
    if resume and not (checkpoint_dir(out) / "last.pt").is_file():
        raise TransferkitError(f"{out}: no checkpoint to resume from (expected {checkpoint_dir(out) / 'last.pt'})")
    if not resume:
        check_writable(out, overwrite)  # fail before spending time on features
    from transferkit.modalities.text.table import is_text_data

    if is_text_data(run_config.data):  # text: see text.py
        from transferkit.modalities.text.backbone import DEFAULT_TEXT_BACKBONE
        from transferkit.estimators.text import TextClassifier as Classifier

        if not (backbone or config):
            run_config = run_config.replace(backbone=DEFAULT_TEXT_BACKBONE)
    else:
        from transferkit.estimators.image import ImageClassifier as Classifier

    params = {k: v for k, v in run_config.to_dict().items() if k not in ("data",)}
    clf = Classifier(**params).fit(run_config.data, out=out, resume=resume)
    if not getattr(clf, "is_main_process_", True):
        return  # other ranks of a multi-process run: rank 0 saves
    clf.save(out, overwrite=overwrite or resume)
    if as_json:
        print(json.dumps(clf.metrics_))
        return
    console = _console()
    for split in ("val", "test"):
        if split in clf.metrics_:
            m = clf.metrics_[split]
            console.print(f"{split}: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  (n={m['n']})")
    console.print(f"saved to {out}  ({clf.metrics_['train_seconds']:.1f} s)")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder written by `transferkit train`")],
    data: Annotated[Path, typer.Argument(help="Labelled folder: <class>/*")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: accuracy, macro_f1, per_class, ...")] = False,
    show_errors: Annotated[int, typer.Option(help="List up to N misclassified files")] = 10,
) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix of RUN on DATA."""
    from transferkit.estimators.text import is_text_run

    if is_text_run(run):  # a text run: DATA is a labelled .csv/.tsv/.jsonl (see text_cli.py)
        from transferkit.cli.text_commands import evaluate_text

        evaluate_text(run, data, as_json, show_errors)
        return
    from transferkit.estimators.image import ImageClassifier

    clf = ImageClassifier.load(run)
    report = clf.evaluate(data)
    files, predicted = report.pop("files"), report.pop("predicted")
    index = {c: i for i, c in enumerate(clf.classes_)}
    wrong = [(f, clf.classes_[p]) for f, p in zip(files, predicted) if index.get(Path(f).parent.name) != p]
    report["misclassified"] = [{"path": f, "predicted": p} for f, p in wrong]
    if as_json:
        print(json.dumps(report))
        return
    print_report(report, clf.classes_)
    if wrong and show_errors:
        _console().print("misclassified: " + "; ".join(f"{f} -> {p}" for f, p in wrong[:show_errors]))


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder written by `transferkit train`")],
    inputs: Annotated[list[str], typer.Argument(help="Image files and/or folders; for a text run: texts and/or .csv/.tsv/.jsonl files")],
    top_k: Annotated[int, typer.Option(help="Labels to show per input")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """Top-k labels with probabilities for each image (or text)."""
    from transferkit.estimators.text import is_text_run

    if is_text_run(run):
        from transferkit.cli.text_commands import predict_text

        predict_text(run, inputs, top_k, as_json)
        return
    import numpy as np

    from transferkit.estimators.image import ImageClassifier
    from transferkit.modalities.image.folders import list_image_inputs

    clf = ImageClassifier.load(run)
    clf.verbose = False
    files = list_image_inputs(inputs)
    proba, ok, failed = clf.predict_files(files)
    reasons = dict(failed)
    rows = iter(proba)
    k = max(1, min(top_k, len(clf.classes_)))
    for path, good in zip(files, ok):
        if not good:
            record: dict[str, Any] = {"path": path, "error": reasons.get(path, "unreadable")}
        else:
            p = next(rows)
            top = np.argsort(-p)[:k]
            record = {"path": path, "predictions": [{"label": clf.classes_[i], "probability": round(float(p[i]), 6)}
                                                    for i in top]}
        if as_json:
            print(json.dumps(record))
        elif "error" in record:
            print(f"{path}\terror: {record['error']}")
        else:
            print(f"{path}\t" + "  ".join(f"{r['label']} {r['probability']:.3f}" for r in record["predictions"]))
    if failed:
        raise typer.Exit(1)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders written by `transferkit train`")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list, a row per run")] = False,
) -> None:
    """One table: strategy, val/test accuracy and macro-F1, train time and trainable parameters per run."""
    from rich.table import Table

    from transferkit.runs.rundir import read_run

    rows = []
    for path in runs:
        run = read_run(path)
        m = run.metrics
        rows.append({
            "run": str(path), "strategy": run.config.strategy, "backbone": run.config.backbone,
            "epochs": m.get("epochs_run"),
            **{f"{split}_{key}": m[split][key] if split in m else None
               for split in ("val", "test") for key in ("accuracy", "macro_f1")},
            "train_seconds": m.get("train_seconds"), "trainable_parameters": m.get("trainable_parameters"),
        })
    if as_json:
        print(json.dumps(rows))
        return
    table = Table()
    for column in ("run", "strategy", "backbone", "val acc", "val macro-F1", "test acc", "test macro-F1",
                   "train time", "trainable params"):
        table.add_column(column, justify="left" if column in ("run", "strategy", "backbone") else "right")

    def num(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for r in rows:
        table.add_row(r["run"], r["strategy"], r["backbone"], num(r["val_accuracy"], ".4f"), num(r["val_macro_f1"], ".4f"),
                      num(r["test_accuracy"], ".4f"), num(r["test_macro_f1"], ".4f"),
                      num(r["train_seconds"], ".1f") + (" s" if r["train_seconds"] is not None else ""),
                      num(r["trainable_parameters"], ",d"))
    _console().print(table)


@app.command()
def backbones(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Backbones that can be used, which work offline, their input size and feature dimension."""
    from rich.table import Table

    from transferkit.modalities.image.backbones import list_backbones

    rows = list_backbones()
    if as_json:
        print(json.dumps(rows))
        return
    table = Table()
    for column in ("name", "source", "offline", "input size", "features"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["source"], "yes" if row["offline"] else "no (needs network or --weights)",
                      str(row["input_size"] or "model's"), str(row["num_features"] or "model's"))
    _console().print(table)


@app.command()
def demo(
    per_class: Annotated[int, typer.Option(help="Labelled images per class")] = 10,
    seed: Annotated[int, typer.Option()] = 0,
    workdir: Annotated[Optional[Path], typer.Option(help="Where to write the demo images and run")] = None,
) -> None:
    """The main job on an embedded default: scikit-learn's digits, probe vs baselines without pretraining."""
    from transferkit.demo import run_demo

    run_demo(per_class=per_class, seed=seed, workdir=workdir)


@cache_app.command("info")
def cache_info_cmd(cache_dir: Annotated[Optional[Path], typer.Option()] = None,
                   as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What the cache holds: engines and feature sets per backbone fingerprint."""
    from rich.table import Table

    from transferkit.features.cache import cache_info

    info = cache_info(cache_dir)
    if as_json:
        print(json.dumps(info))
        return
    table = Table(title=f"cache at {info['root']} ({info['bytes'] / 1e6:.1f} MB)")
    for column in ("kind", "backbone", "input", "items", "MB", "fingerprint"):
        table.add_column(column)
    for e in info["entries"]:
        table.add_row(e["kind"], str(e["backbone"]), str(e["input_size"] or ""), "" if e["items"] is None else str(e["items"]),
                      f"{e['bytes'] / 1e6:.1f}", e["fingerprint"])
    _console().print(table)


@cache_app.command("clear")
def cache_clear_cmd(cache_dir: Annotated[Optional[Path], typer.Option()] = None,
                    kind: Annotated[Optional[str], typer.Option(help="features | engines (default: both)")] = None) -> None:
    """Delete cached features and/or exported engines."""
    from transferkit.features.cache import cache_clear

    if kind not in (None, "features", "engines"):
        raise TransferkitError(f"--kind must be features or engines, got {kind!r}")
    freed = cache_clear(cache_dir, kind)
    print(f"freed {freed / 1e6:.1f} MB")


def main() -> None:
    try:
        app()
    except TransferkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
