"""Text: CSV / TSV / JSONL rows in, pooled encoder layers through the ONNX engine and the per-text cache.

Names: ``all-MiniLM-L6-v2`` (the packaged copy, the offline default), a local model folder, or a Hugging
Face hub id. A probe reads the last four encoder layers, each pooled and normalised as the model does,
concatenated; fine-tuning reads the sentence embedding (:func:`feature_layers`). Run folders add
``tokenizer/`` and ``encoder/config.json``, so a run is rebuilt from its own files when nothing is cached.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from transferkit.config import LAYERS_RANGE, TOKENS_RANGE, RunConfig
from transferkit.errors import DataError, TransferkitError
from transferkit.modalities.base import (Decide, Defaults, Embed, Featurized, Inputs, LabelledData, Misclassified,
                                         Predictor, RunParts, Split, sort_classes, stratified_indices,
                                         warn_single_examples)
from transferkit.modalities.text.backbone import (DEFAULT_TEXT_BACKBONE, TextBackboneSpec, list_text_backbones,
                                                  resolve_text_backbone)
from transferkit.modalities.text.embed import embed_texts
from transferkit.modalities.text.encoder import TEXT_ENGINE_FILE, export_text_onnx
from transferkit.modalities.text.reading import text_records, warn_table
from transferkit.modalities.text.table import (TEXT_SUFFIXES, TextTable, describe_skipped, is_text_data,
                                               read_text_table, texts_table)
from transferkit.runs.folders import RUN_ENGINE
from transferkit.runs.integrity import agree, content_fingerprint
from transferkit.runs.schema import Check, check_object, number, one_of
from transferkit.strategies import parse_strategy

if TYPE_CHECKING:
    from torch import nn

    from transferkit.modalities.text.inputs import TextInputs

    from transferkit.runs.rundir import RunFiles
    from transferkit.strategies import Strategy
    from transferkit.train.data import TrainData

TEXT_FORMAT = "transferkit-text-1"
# Text fine-tuning: rt_polarity / MiniLM-L6, one gradual epoch: batch 32 beat 64 (test 0.835 vs 0.816), LR 2e-4
# with decay 0.8 and 0.1 epoch of warm-up beat 1e-4 / 0.7 / none (0.835 vs 0.805). gradual's head-only epochs
# after the probe: 0 (no augmentation, so the probe's head is already that phase's optimum).
TEXT_DEFAULTS = Defaults(
    training={"epochs": 2, "batch_size": 32, "lr": 2e-4, "layer_decay": 0.8, "warmup": 0.1, "freeze_epochs": 0},
    epochs=(1, 1, 3),
    finetunes=(("gradual", "full", None, "LP-FT: probe head, then the whole encoder"),
               ("gradual", "full", 5e-5, "LP-FT at a lower learning rate"),
               ("gradual", "lora:r=8,alpha=16", 1e-3, "LoRA adapters on the encoder"),
               ("finetune", "full", None, "the whole encoder from the start")),
    tuned=frozenset({"feature_layers", "pooling"}))  # each a feature set of its own, extracted once
# A probe reads the last four layers (see pooled_encoder); fine-tuning reads the sentence embedding, which
# did better there: rt_polarity, gradual, one epoch: test 0.835 with 1 layer against 0.815 with 4.
PROBE_FEATURE_LAYERS = 4
# What a text run's preprocessing.json holds (run_parts writes it); the model's metadata repeats some of it.
RUN_FILE_SCHEMA: dict[str, Check] = {
    "kind": one_of("text"), "max_length": number(*TOKENS_RANGE, integer=True), "pooling": one_of("mean", "cls"),
    "normalize": one_of(True, False), "layers": number(*LAYERS_RANGE, integer=True),
    "tokenizer": one_of("tokenizer/"), "encoder_config": one_of("encoder/config.json"),
}


def feature_layers(config: RunConfig) -> int:
    """How many final encoder layers the run's features concatenate (``config.feature_layers`` or its default)."""
    if config.feature_layers is not None:
        return config.feature_layers
    return PROBE_FEATURE_LAYERS if parse_strategy(config.strategy).frozen_backbone else 1


class TextModality:
    """Labelled text files (or texts + labels in memory) and Hugging Face encoders."""

    name = "text"
    defaults = TEXT_DEFAULTS
    default_backbone = DEFAULT_TEXT_BACKBONE
    run_format = TEXT_FORMAT
    run_files = ("tokenizer", "encoder/config.json")
    item_key = "text"
    skipped_key = "skipped_rows"
    data_hint = f"a {', '.join(TEXT_SUFFIXES)} file"

    def accepts(self, data: Any) -> bool:
        if isinstance(data, (str, Path)):
            return is_text_data(data)
        return isinstance(data, Sequence) and all(isinstance(t, str) for t in data)

    def check(self, config: RunConfig, strategy: "Strategy") -> None:
        if strategy.last_k is not None:  # an encoder's blocks are layers of one kind: train them all or none
            raise TransferkitError(f"strategy '{config.strategy}' is for image backbones; for text use "
                                   "linear-probe, finetune, gradual or scratch")

    # -- data --------------------------------------------------------------------------------------------------
    def table(self, data: Any, labels: Sequence[Any] | None, config: RunConfig) -> TextTable:
        """A labelled file (labels None), or texts with their labels."""
        if isinstance(data, (str, Path)) and labels is None:
            return read_text_table(data, config.text_column, config.label_column, strict=config.strict)
        return texts_table(data, labels, config.strict)

    def read_training(self, data: Any, labels: Sequence[Any] | None, val_data: Any,
                      config: RunConfig) -> LabelledData:
        table = self.table(data, labels, config)
        warn_table(table)
        classes = sort_classes(table.labels)
        if not classes:
            raise DataError(f"{table.path}: no labels to learn from; pass labels=[...] with the texts, or a file "
                            "with a label column")
        if len(classes) < 2:  # rows left out (an unclosed quote swallows the rest) are often why
            skipped = f" (skipped {describe_skipped(table, 1)})" if table.skipped else ""
            raise DataError(f"{table.path}: only one label ('{classes[0]}') found; a classifier needs at least 2"
                            f"{skipped}")
        train = labelled(table, classes, "is not in the training data")
        dataset = LabelledData(classes, train, Split(lines=[]), skipped=table.skipped,
                               details={"text_column": table.text_column, "label_column": table.label_column})
        if val_data is not None:
            val_table = self.table(val_data, None, config)
            warn_table(val_table)
            dataset.val = labelled(val_table, classes, "is not in the training data")
            dataset.val_source, dataset.held_out = str(val_data), True
        elif config.val_fraction > 0:
            warn_single_examples(train, classes, table.path, "cannot be in both train and val (never validated)")
            train_idx, val_idx = stratified_indices(train.labels, config.val_fraction, config.seed)
            dataset.train, dataset.val = train.take(train_idx), train.take(val_idx)
            dataset.val_source = f"{config.val_fraction:g} of train, stratified, seed {config.seed}"
            single = {y for y, n in Counter(train.labels).items() if n == 1}  # warned about above
            train = dataset.train.take([i for i, y in enumerate(dataset.train.labels) if y not in single])
        # as images do: one training example (all there was, or what the split left) is too few
        warn_single_examples(train, classes, f"the training rows of {table.path}", "is too few to learn a class from")
        return dataset

    def read_labelled(self, data: Any, labels: Sequence[Any] | None, classes: list[str],
                      config: RunConfig) -> tuple[Split, list[dict[str, Any]]]:
        table = self.table(data, labels, config)
        if table.merged:
            warn_table(dataclasses.replace(table, skipped=[]))  # the rows left out are in evaluate's report
        return labelled(table, classes, f"is not one the model knows ({', '.join(classes)})"), table.skipped

    def predict_inputs(self, inputs: Inputs, config: RunConfig, text: bool = False) -> list[dict[str, Any]]:
        """A .csv / .tsv / .jsonl file gives one record per row; other strings are texts, except those that
        look like a path, which are refused in one line; ``text=True`` takes every input as a text."""
        return text_records(inputs, config.text_column, config.strict, text)

    # -- backbone and features -------------------------------------------------------------------------------
    def backbones(self) -> list[dict[str, Any]]:
        return list_text_backbones()

    def resolve(self, config: RunConfig, strategy: "Strategy") -> TextBackboneSpec:
        spec = resolve_text_backbone(config.backbone, config.pooling, feature_layers(config), config.cache_dir)
        return spec if config.pretrained and strategy.pretrained else dataclasses.replace(spec, pretrained=False)

    def spec_from_run(self, run: "RunFiles") -> TextBackboneSpec:
        """The run's encoder: preprocessing.json checked field by field and against the config and the model's
        metadata; cached under the run's content fingerprint (runs/integrity.py: the tensors, tokenizer/,
        encoder/ and the run's engine), not the one it claims. The encoder is rebuilt from the run (encoder/config.json
        + features.* tensors) only when neither its engine nor its embeddings are cached on this machine."""
        meta, path = run.model_meta, run.path
        source = path / "preprocessing.json"
        stored = check_object(source, run.preprocessing, RUN_FILE_SCHEMA)
        agree(source, "max_length", stored["max_length"], run.config.max_length, "config.yaml's max_length")
        for key, default in (("pooling", "mean"), ("normalize", "false"), ("layers", "1")):
            agree(source, key, str(stored[key]).lower(), meta.get(key, default), "model.safetensors' metadata")
        fingerprint = content_fingerprint(run.model_path, meta, stored,
                                          (path / "tokenizer", path / "encoder", path / RUN_ENGINE))
        return TextBackboneSpec(meta.get("backbone", run.config.backbone), str(path / "encoder"), "run",
                                stored["pooling"], stored["normalize"], "", stored["layers"],
                                tokenizer_location=str(path / "tokenizer"), run_model=str(run.model_path),
                                fixed_fingerprint=fingerprint)

    def build_net(self, spec: TextBackboneSpec) -> "nn.Module":
        return spec.build()

    def featurize(self, spec: TextBackboneSpec, items: list[str], config: RunConfig,
                  build_net: Callable[[], "nn.Module"], show_progress: bool,
                  calibrate_on: list[str] | None = None) -> Featurized:
        result = embed_texts(spec, items, max_length=config.max_length, engine=config.engine,
                             batch_size=config.inference_batch, use_cache=config.cache, cache_dir=config.cache_dir,
                             cache_dtype=config.cache_dtype, show_progress=show_progress, build_net=build_net,
                             calibrate_on=calibrate_on)
        stats = {"cached": result.cached, "extracted": result.extracted, "seconds": round(result.seconds, 3),
                 "engine": result.engine, "export_seconds": round(result.export_seconds, 3)}
        return Featurized(result.features, np.ones(len(items), dtype=bool), [], stats, normalized=spec.normalize)

    # -- fine-tuning (torch from here on) ----------------------------------------------------------------------
    def build_model(self, spec: TextBackboneSpec, n_classes: int) -> "nn.Module":
        from transferkit.modalities.text.training import TextModel

        features = spec.build()
        return TextModel(features, features.num_features, n_classes)

    def train_data(self, spec: TextBackboneSpec, split: Split, config: RunConfig, n_classes: int) -> "TrainData":
        from transferkit.modalities.text.training import text_train_data

        return text_train_data(split, spec.load_tokenizer(), config, self.defaults.training)

    def eval_inputs(self, spec: TextBackboneSpec, split: Split,
                    config: RunConfig) -> tuple[list[list[int]], np.ndarray, list[tuple[str, str]]]:
        ids = spec.load_tokenizer().encode(split.items, config.max_length) if len(split) else []
        return ids, np.asarray(split.labels, dtype=np.int64), []

    def predictor(self, spec: TextBackboneSpec, config: RunConfig) -> Predictor:
        from transferkit.modalities.text.training import predict_text_proba

        pad_id = spec.load_tokenizer().pad_token_id
        return lambda model, ids, accelerator: predict_text_proba(model, ids, pad_id, config.inference_batch,
                                                                 accelerator)

    def engine_file(self, spec: TextBackboneSpec) -> str:
        return TEXT_ENGINE_FILE

    def export_engine(self, spec: TextBackboneSpec, net: "nn.Module", path: Path) -> None:
        export_text_onnx(net, path)

    def source_head(self, spec: TextBackboneSpec, num_features: int) -> "nn.Module | None":
        return None  # sentence encoders are trained on pairs: no source classifier to keep

    def frozen_forward(self, spec: TextBackboneSpec, config: RunConfig) -> Callable[[Any], np.ndarray] | None:
        # The probe's head is already the optimum of a head-only phase on cached embeddings (no augmentation),
        # so gradual goes straight to training everything; a head-only epoch, if asked for, runs in torch.
        return None

    # -- run folder --------------------------------------------------------------------------------------------
    def run_details(self, spec: TextBackboneSpec, config: RunConfig) -> dict[str, Any]:
        return {"backbone": spec.name, "pooling": spec.pooling, "max_length": config.max_length}

    def run_parts(self, spec: TextBackboneSpec, config: RunConfig) -> RunParts:
        meta = {"pooling": spec.pooling, "normalize": str(spec.normalize).lower(), "layers": str(spec.layers),
                "max_length": str(config.max_length)}
        preprocessing = {"kind": "text", "max_length": config.max_length, "pooling": spec.pooling,
                         "normalize": spec.normalize, "layers": spec.layers, "tokenizer": "tokenizer/",
                         "encoder_config": "encoder/config.json"}

        def add_files(staging: Path) -> None:
            spec.load_tokenizer().save(staging / "tokenizer")
            save_encoder_config(spec, staging / "encoder")

        return RunParts(meta, preprocessing, add_files)

    # -- export, serve, report, auto, ``transferkit backbones`` ------------------------------------------------
    def inputs(self, clf: Any) -> "TextInputs":
        from transferkit.modalities.text.inputs import TextInputs

        return TextInputs(clf)

    def show_errors(self, errors: list[Misclassified], embed: Embed) -> str:
        from transferkit.modalities.text.views import text_errors

        return text_errors(errors, embed)

    def derive(self, dataset: LabelledData, config: RunConfig, decide: Decide) -> dict[str, Any]:
        from transferkit.modalities.text.facts import text_facts

        return text_facts(self.resolve(config, parse_strategy("linear-probe")), dataset, config, decide)

    def input_label(self, row: dict[str, Any]) -> str:
        return "tokens"


def labelled(table: TextTable, classes: list[str], unknown_says: str) -> Split:
    """The table's rows with labels indexed by ``classes`` (a label that differs from a class only in case
    is that class); a label outside them is an error."""
    index = {c: i for i, c in enumerate(classes)}
    folded = {c.casefold(): i for i, c in enumerate(classes)}
    if len(folded) == len(index):
        index = {**{label: folded[label.casefold()] for label in set(table.labels) if label.casefold() in folded},
                 **index}
    unknown = sorted(set(table.labels) - set(index))
    if unknown:
        raise DataError(f"{table.path}: label '{unknown[0]}' {unknown_says}")
    return Split(list(table.texts), [index[label] for label in table.labels], list(table.lines))


def save_encoder_config(spec: TextBackboneSpec, folder: Path) -> None:
    """The encoder's config.json, which rebuilds the architecture the run's tensors load into."""
    folder.mkdir(parents=True, exist_ok=True)
    local = Path(spec.location) / "config.json"
    if spec.source != "hub" and local.is_file():
        shutil.copyfile(local, folder / "config.json")
        return
    from transformers import AutoConfig

    AutoConfig.from_pretrained(spec.location).save_pretrained(str(folder))
