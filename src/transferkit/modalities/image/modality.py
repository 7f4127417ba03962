"""Images: class folders in, pooled backbone features through the ONNX engine and the per-file cache."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from transferkit.config import RunConfig
from transferkit.errors import DataError, TransferkitError
from transferkit.features.engines import open_engine
from transferkit.modalities.base import Featurized, Inputs, LabelledData, Predictor, RunParts, Split
from transferkit.modalities.image.backbones import DEFAULT_IMAGE_BACKBONE, BackboneSpec, resolve_backbone
from transferkit.modalities.image.features import FeatureSource, extract_features
from transferkit.modalities.image.folders import labelled_split, list_image_inputs, load_image_folder
from transferkit.modalities.image.preprocessing import Preprocessing
from transferkit.progress import log

if TYPE_CHECKING:
    from torch import nn

    from transferkit.runs.rundir import RunFiles
    from transferkit.train.data import TrainData
    from transferkit.train.strategies import Strategy

IMAGE_FORMAT = "transferkit-image-1"


class ImageModality:
    """Image folders (``<root>/train/<class>/*`` or ``<root>/<class>/*``) and timm / torchvision backbones."""

    name = "image"
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
            raise DataError("labels=... is for texts; an image's label is the name of its class folder")
        dataset = load_image_folder(data, 0.0 if val_data is not None else config.val_fraction, config.seed)
        if val_data is not None:  # the user's own held-out folder, labelled by the training classes
            dataset.val = labelled_split(val_data, dataset.classes)
            dataset.val_source, dataset.held_out = str(val_data), True
        if dataset.ignored:
            log(f"warning: ignored {len(dataset.ignored)} file(s) that are not images by extension: "
                f"{', '.join(dataset.ignored[:5])}{' ...' if len(dataset.ignored) > 5 else ''}")
        return dataset

    def read_labelled(self, data: Any, labels: Sequence[Any] | None, classes: list[str],
                      config: RunConfig) -> tuple[Split, list[dict[str, Any]]]:
        if labels is not None:
            raise DataError("labels=... is for texts; pass a folder with one sub-folder per class")
        return labelled_split(data, classes), []

    def predict_inputs(self, inputs: Inputs, config: RunConfig) -> list[dict[str, Any]]:
        files = list_image_inputs([inputs] if isinstance(inputs, (str, Path)) else inputs)
        return [{"input": path} for path in files]

    # -- backbone and features -------------------------------------------------------------------------------
    def resolve(self, config: RunConfig, strategy: "Strategy") -> BackboneSpec:
        return resolve_backbone(config.backbone, config.weights, config.pretrained and strategy.pretrained,
                                config.image_size, config.crop_pct)

    def spec_from_run(self, run: "RunFiles") -> BackboneSpec:
        meta = run.model_meta
        return BackboneSpec(meta.get("backbone", run.config.backbone), meta["arch"], meta.get("source", "timm"),
                            Preprocessing.from_dict(run.preprocessing), None, pretrained=False,
                            run_model=str(run.model_path), fixed_fingerprint=meta["fingerprint"])

    def build_net(self, spec: BackboneSpec) -> "nn.Module":
        return FeatureSource.from_spec(spec).build_net()

    def featurize(self, spec: BackboneSpec, items: list[str], config: RunConfig,
                  build_net: Callable[[], "nn.Module"], show_progress: bool) -> Featurized:
        source = FeatureSource(spec.fingerprint, spec.preprocessing, build_net, spec.name)
        result = extract_features(source, items, engine=config.engine, batch_size=config.inference_batch,
                                  workers=config.workers, use_cache=config.cache, cache_dir=config.cache_dir,
                                  cache_dtype=config.cache_dtype, show_progress=show_progress)
        stats = {"cached": result.cached, "extracted": result.extracted, "seconds": round(result.seconds, 3),
                 "engine": result.engine}
        return Featurized(result.features, result.ok, result.failed, stats)

    # -- fine-tuning (torch from here on) ----------------------------------------------------------------------
    def build_model(self, spec: BackboneSpec, n_classes: int) -> "nn.Module":
        from transferkit.modalities.image.model import ImageModel

        backbone = spec.build()
        return ImageModel(backbone, spec.preprocessing, int(backbone.num_features), n_classes)

    def train_data(self, spec: BackboneSpec, split: Split, config: RunConfig, n_classes: int) -> "TrainData":
        from transferkit.modalities.image.training import image_train_data

        return image_train_data(split, spec.preprocessing, config, n_classes)

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
        return FrozenEngine(lambda: open_engine(source.fingerprint, spec.preprocessing.input_size, source.build_net,
                                                config.engine, config.cache_dir, spec.name))

    # -- run folder --------------------------------------------------------------------------------------------
    def run_details(self, spec: BackboneSpec, config: RunConfig) -> dict[str, Any]:
        return {}

    def run_parts(self, spec: BackboneSpec, config: RunConfig) -> RunParts:
        return RunParts({"arch": spec.arch}, spec.preprocessing.to_dict())
