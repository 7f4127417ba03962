"""Images: class folders in, pooled backbone features through the ONNX engine and the per-file cache."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from transferkit.backbone_sources import SOURCES
from transferkit.config import FINETUNE_DEFAULTS, RunConfig
from transferkit.errors import DataError, RunDirError, TransferkitError
from transferkit.features.engines import export_onnx, image_engine_file
from transferkit.modalities.base import (Decide, Defaults, Embed, Featurized, Inputs, LabelledData, Misclassified,
                                         Predictor, RunParts, Split, warn_single_examples)
from transferkit.modalities.image.backbones import (DEFAULT_IMAGE_BACKBONE, BackboneSpec, list_backbones,
                                                   resolve_backbone)
from transferkit.modalities.image.features import FeatureSource, extract_features
from transferkit.modalities.image.arrays import as_items, featurize_images, is_in_memory
from transferkit.modalities.image.folders import labelled_files, stratified_split, labelled_split, list_image_inputs, load_image_folder
from transferkit.modalities.image.preprocessing import Preprocessing
from transferkit.modalities.image.source_head import source_head
from transferkit.runs.folders import RUN_ENGINE
from transferkit.runs.integrity import agree, content_fingerprint
from transferkit.runs.rundir import read_tensors

if TYPE_CHECKING:
    from torch import nn

    from transferkit.modalities.image.inputs import ImageInputs

    from transferkit.runs.rundir import RunFiles
    from transferkit.train.data import TrainData
    from transferkit.strategies import Strategy

IMAGE_FORMAT = "transferkit-image-1"
IMAGE_DEFAULTS = Defaults(
    training=FINETUNE_DEFAULTS, epochs=(2, 3, 10),
    finetunes=(("gradual", "full", None, "LP-FT: probe head, then every layer (the strongest default on CIFAR-10)"),
               ("gradual", "lora:r=8,alpha=16", 1e-3, "LoRA adapters: few parameters, hard to overfit"),
               ("gradual", "full", 1e-3, "LP-FT at a higher learning rate"),
               ("last-k:2", "full", 1e-3, "only the last two blocks and the head train"),
               ("finetune", "full", None, "every layer from the start")),
    tuned=frozenset({"augment"}))
NORMALIZE = "features.normalize."  # the model's own mean and std (modalities/image/model.py: Normalize)


def check_run_preprocessing(run: "RunFiles", preprocessing: Preprocessing) -> None:
    """preprocessing.json agrees with the run's config (the size and crop it asked for) and with the mean and std
    inside its model: a run whose files disagree is refused, not used with one of them."""
    source = run.path / "preprocessing.json"
    config = run.config
    if config.image_size is not None:
        agree(source, "input_size", preprocessing.input_size, config.image_size, "config.yaml's image_size")
    if config.crop_pct is not None:
        agree(source, "crop_pct", preprocessing.crop_pct, config.crop_pct, "config.yaml's crop_pct")
    stored = read_tensors(run.model_path, NORMALIZE)
    for name in ("mean", "std"):
        if name in stored:
            inside = [round(float(v), 5) for v in np.ravel(stored[name])]
            agree(source, name, [round(v, 5) for v in getattr(preprocessing, name)], inside,
                  f"model.safetensors' {NORMALIZE}{name}")


class ImageModality:
    """Image folders (``<root>/train/<class>/*`` or ``<root>/<class>/*``) and timm / torchvision backbones."""

    name = "image"
    defaults = IMAGE_DEFAULTS
    default_backbone = DEFAULT_IMAGE_BACKBONE
    run_format = IMAGE_FORMAT
    run_files: tuple[str, ...] = ()
    item_key = "path"
    skipped_key = "skipped_files"
    data_hint = "an image folder (<class>/ or train/<class>/ sub-folders)"

    def accepts(self, data: Any) -> bool:
        return isinstance(data, (str, Path)) and Path(data).is_dir()

    def check(self, config: RunConfig, strategy: "Strategy") -> None:
        if config.feature_layers not in (None, 1):
            raise TransferkitError(f"feature_layers {config.feature_layers}: image backbones give one pooled "
                                   "feature vector; drop --feature-layers (it is for text encoders)")

    # -- data --------------------------------------------------------------------------------------------------
    def read_training(self, data: Any, labels: Sequence[Any] | None, val_data: Any,
                      config: RunConfig) -> LabelledData:
        if labels is not None:
            return self.read_files(data, labels, val_data, config)
        dataset = load_image_folder(data, 0.0 if val_data is not None else config.val_fraction, config.seed)
        if val_data is not None:  # the user's own held-out folder, labelled by the training classes
            dataset.val, skipped = labelled_split(val_data, dataset.classes)
            dataset.val_source, dataset.held_out = str(val_data), True
            dataset.skipped += skipped
        # a split carved off train needs two per class (an error then); a val folder leaves one possible
        warn_single_examples(dataset.train, dataset.classes, "train", "is too few to learn a class from")
        return dataset

    def read_labelled(self, data: Any, labels: Sequence[Any] | None, classes: list[str],
                      config: RunConfig) -> tuple[Split, list[dict[str, Any]]]:
        if labels is not None:
            return labelled_files(data, labels, classes)[0], []
        return labelled_split(data, classes)

    def read_files(self, paths: Sequence[Any], labels: Sequence[Any], val_data: Any,
                   config: RunConfig) -> LabelledData:
        """Image files with labels (scikit-learn's ``fit(X, y)``); validation is split off them unless given."""
        train, classes = labelled_files(paths, labels)
        if len(classes) < 2:
            raise DataError(f"only one label ('{classes[0]}') found; a classifier needs at least 2")
        val, source = Split(), "none"
        if val_data is not None:
            val, source = labelled_split(val_data, classes)[0], str(val_data)
        elif config.val_fraction > 0:
            train, val = stratified_split(train, classes, config.val_fraction, config.seed)
            source = f"{config.val_fraction:g} of train, stratified, seed {config.seed}"
        warn_single_examples(train, classes, "train", "is too few to learn a class from")
        return LabelledData(classes, train, val, val_source=source, held_out=val_data is not None)

    def predict_inputs(self, inputs: Inputs, config: RunConfig, text: bool = False) -> list[dict[str, Any]]:
        if text:
            raise DataError("--text (text=True) is for text runs; this run classifies images: pass image files "
                            "or folders")
        items = as_items(inputs) if not isinstance(inputs, (str, Path)) else [inputs]
        if items and all(is_in_memory(item) for item in items):  # PIL images or arrays (scikit-learn style)
            return [{"input": item} for item in items]
        return [{"input": path} for path in list_image_inputs(items)]

    # -- backbone and features -------------------------------------------------------------------------------
    def backbones(self) -> list[dict[str, Any]]:
        return list_backbones()

    def resolve(self, config: RunConfig, strategy: "Strategy") -> BackboneSpec:
        return resolve_backbone(config.backbone, config.weights, config.pretrained and strategy.pretrained,
                                config.image_size, config.crop_pct)

    def spec_from_run(self, run: "RunFiles") -> BackboneSpec:
        """The run's network, its preprocessing checked field by field and against the config and the model's own
        normalisation; cached under the run's content fingerprint (runs/integrity.py), not the one it claims."""
        meta = run.model_meta
        missing = [key for key in ("arch", "fingerprint") if not meta.get(key)]
        if missing:
            raise RunDirError(f"{run.model_path}: its metadata lacks '{missing[0]}' (not written by transferkit, or "
                              "damaged); train the run again")
        preprocessing = Preprocessing.from_run_file(run.preprocessing, run.path / "preprocessing.json")
        check_run_preprocessing(run, preprocessing)
        fingerprint = content_fingerprint(run.model_path, meta, preprocessing.to_dict(), (run.path / RUN_ENGINE,))
        return BackboneSpec(meta.get("backbone", run.config.backbone), meta["arch"], meta.get("source", "timm"),
                            preprocessing, None, pretrained=False, run_model=str(run.model_path),
                            fixed_fingerprint=fingerprint)

    def build_net(self, spec: BackboneSpec) -> "nn.Module":
        return FeatureSource.from_spec(spec).build_net()

    def featurize(self, spec: BackboneSpec, items: list[str], config: RunConfig,
                  build_net: Callable[[], "nn.Module"], show_progress: bool,
                  calibrate_on: list[str] | None = None) -> Featurized:
        source = FeatureSource(spec.fingerprint, spec.preprocessing, build_net, spec.name)
        if items and is_in_memory(items[0]):
            return featurize_images(source, items, config.engine, config.inference_batch, config.cache_dir)
        result = extract_features(source, items, engine=config.engine, batch_size=config.inference_batch,
                                  workers=config.workers, use_cache=config.cache, cache_dir=config.cache_dir,
                                  cache_dtype=config.cache_dtype, show_progress=show_progress,
                                  calibrate_on=calibrate_on)
        stats = {"cached": result.cached, "extracted": result.extracted, "seconds": round(result.seconds, 3),
                 "engine": result.engine, "export_seconds": round(result.export_seconds, 3)}
        return Featurized(result.features, result.ok, result.failed, stats)

    # -- fine-tuning (torch from here on) ----------------------------------------------------------------------
    def build_model(self, spec: BackboneSpec, n_classes: int) -> "nn.Module":
        from transferkit.modalities.image.model import ImageModel

        backbone = spec.build()
        width = SOURCES.get(spec.source).feature_width(backbone)
        return ImageModel(backbone, spec.preprocessing, width, n_classes)

    def train_data(self, spec: BackboneSpec, split: Split, config: RunConfig, n_classes: int) -> "TrainData":
        from transferkit.modalities.image.training import image_train_data

        return image_train_data(split, spec.preprocessing, config, n_classes, self.defaults.training)

    def eval_inputs(self, spec: BackboneSpec, split: Split,
                    config: RunConfig) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
        from transferkit.modalities.image.training import decode_split

        return decode_split(split, spec.preprocessing, config.inference_batch, config.workers)

    def predictor(self, spec: BackboneSpec, config: RunConfig) -> Predictor:
        from transferkit.modalities.image.training import predict_proba

        return lambda model, images, accelerator: predict_proba(model, images, config.inference_batch, accelerator)

    def frozen_forward(self, spec: BackboneSpec, config: RunConfig) -> Callable[[Any], np.ndarray] | None:
        """The pretrained backbone through the cached (ONNX) engine: a head-only phase skips torch's forward."""
        from transferkit.modalities.image.training import FrozenEngine

        source = FeatureSource.from_spec(spec)
        return FrozenEngine(lambda: source.open(config.engine, config.cache_dir), config.inference_batch)

    def engine_file(self, spec: BackboneSpec) -> str:
        return image_engine_file(spec.preprocessing.input_size)

    def export_engine(self, spec: BackboneSpec, net: "nn.Module", path: Path) -> None:
        export_onnx(net, spec.preprocessing.input_size, path)

    def source_head(self, spec: BackboneSpec, num_features: int) -> "nn.Module | None":
        return source_head(spec, num_features)

    # -- run folder --------------------------------------------------------------------------------------------
    def run_details(self, spec: BackboneSpec, config: RunConfig) -> dict[str, Any]:
        return {}

    def run_parts(self, spec: BackboneSpec, config: RunConfig) -> RunParts:
        return RunParts({"arch": spec.arch}, spec.preprocessing.to_dict())

    # -- export, serve, report, auto, ``transferkit backbones`` ------------------------------------------------
    def inputs(self, clf: Any) -> "ImageInputs":
        from transferkit.modalities.image.inputs import ImageInputs

        return ImageInputs(clf)

    def show_errors(self, errors: list[Misclassified], embed: Embed) -> str:
        from transferkit.modalities.image.views import image_errors

        return image_errors(errors, embed)

    def derive(self, dataset: LabelledData, config: RunConfig, decide: Decide) -> dict[str, Any]:
        from transferkit.modalities.image.facts import image_facts

        return image_facts(dataset, config, decide)

    def input_label(self, row: dict[str, Any]) -> str:
        return str(row["input_size"] or "model's")
