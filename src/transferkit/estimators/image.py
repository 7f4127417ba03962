"""``ImageClassifier``: the scikit-learn-style entry point (fit / predict / predict_proba / score / save / load)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from transferkit.modalities.image.backbones import DEFAULT_IMAGE_BACKBONE, BackboneSpec, fingerprint_of, resolve_backbone
from transferkit.train.state import checkpoint_dir
from transferkit.config import RunConfig
from transferkit.estimators.params import ConfiguredEstimator
from transferkit.modalities.image.folders import Split, _scan_split, list_image_inputs, load_image_folder
from transferkit.errors import DataError, TransferkitError
from transferkit.features.engines import open_engine
from transferkit.modalities.image.features import FeatureResult, FeatureSource, extract_features
from transferkit.metrics import classification_metrics
from transferkit.heads.probe import ProbeHead, fit_probe
from transferkit.progress import log
from transferkit.train.strategies import parse_strategy

__all__ = ["ImageClassifier"]

Inputs = str | Path | Sequence[str | Path]


class ImageClassifier(ConfiguredEstimator):
    """A pretrained backbone plus a new head, fitted to an image folder.

    >>> clf = ImageClassifier(backbone="efficientnet_lite0", strategy="linear-probe").fit("data")
    >>> clf.score("data/val"), clf.predict(["a.jpg"])
    """

    def __init__(self, backbone: str = DEFAULT_IMAGE_BACKBONE, strategy: str = "linear-probe", **params: Any) -> None:
        self.config = RunConfig(backbone=backbone, strategy=strategy, **params)
        self.verbose = True

    # -- fitting ---------------------------------------------------------------------------------------------
    def fit(self, data: str | Path, out: str | Path | None = None, resume: bool = False) -> "ImageClassifier":
        """Fit on an image folder (``train/`` + optional ``val/``/``test/``, or one folder per class).

        Fine-tuning strategies keep checkpoints in ``out/checkpoints`` (a temporary folder without ``out``);
        ``resume=True`` continues from the last one.
        """
        config = self.config.replace(data=str(data))
        strategy = parse_strategy(config.strategy)
        if config.feature_layers not in (None, 1):
            raise TransferkitError(f"feature_layers {config.feature_layers}: image backbones give one pooled "
                                   "feature vector; drop --feature-layers (it is for text encoders)")
        if not strategy.frozen_backbone:
            return self._fit_finetune(config, strategy, out, resume)
        start = time.perf_counter()
        dataset = load_image_folder(data, config.val_fraction, config.seed)
        if dataset.ignored:
            log(f"warning: ignored {len(dataset.ignored)} file(s) that are not images by extension: "
                f"{', '.join(dataset.ignored[:5])}{' ...' if len(dataset.ignored) > 5 else ''}")
        log(f"data: {dataset.describe()}")
        spec = resolve_backbone(config.backbone, config.weights, config.pretrained, config.image_size,
                                config.crop_pct)
        source = FeatureSource.from_spec(spec)
        train_x, train_y, skipped = self._split_features(source, dataset.train, "train", config)
        missing = [dataset.classes[c] for c in range(len(dataset.classes)) if c not in set(train_y.tolist())]
        if missing:
            raise DataError(f"class '{missing[0]}' has no readable training images")
        val_x, val_y, skipped_val = self._split_features(source, dataset.val, "val", config)
        # A validation split carved out of train only chooses the L2 strength; the head is then refitted on
        # both. A val/ folder is the user's own held-out set and stays out of training.
        head = fit_probe(train_x, train_y, len(dataset.classes), val_x, val_y, l2=config.l2,
                         class_weight=config.class_weights, refit=dataset.val_source != "folder")
        self.config, self.spec_, self.source_ = config, spec, source
        self.classes_, self.head_ = list(dataset.classes), head
        self.preprocessing_ = spec.preprocessing
        metrics: dict[str, Any] = {"data": dataset.describe(), "strategy": strategy.name,
                                   "probe": {"l2": head.l2, "path": head.path, "refit_on_train_and_val": head.refit}}
        if len(val_y):
            val_proba = head.val_proba if head.val_proba is not None else head.predict_proba(val_x)
            metrics["val"] = classification_metrics(val_y, val_proba, self.classes_)
        if len(dataset.test):
            test_x, test_y, skipped_test = self._split_features(source, dataset.test, "test", config)
            metrics["test"] = classification_metrics(test_y, head.predict_proba(test_x), self.classes_)
            skipped += skipped_test
        metrics["skipped_files"] = [{"path": p, "reason": r} for p, r in skipped + skipped_val]
        metrics["train_seconds"] = round(time.perf_counter() - start, 3)
        metrics["trainable_parameters"] = int(head.weight.size + head.bias.size)
        self.metrics_ = metrics
        return self

    def _fit_finetune(self, config: RunConfig, strategy: Any, out: str | Path | None, resume: bool) -> "ImageClassifier":
        """Train the backbone too (see training.py); the result serves predict/save like a probe run."""
        import tempfile

        import torch

        from transferkit.modalities.image.model import ImageModel
        from transferkit.modalities.image.training import decode_split, image_train_data
        from transferkit.digests import tensor_fingerprint
        from transferkit.train.loop import train_model

        start = time.perf_counter()
        dataset = load_image_folder(config.data, config.val_fraction, config.seed)
        log(f"data: {dataset.describe()}")
        spec = resolve_backbone(config.backbone, config.weights, config.pretrained and strategy.pretrained,
                                config.image_size, config.crop_pct)
        n_classes = len(dataset.classes)
        head_init, frozen_features = None, None
        if strategy.init_head_from_probe:  # LP-FT: phase 1 starts from the linear-probe solution
            source = FeatureSource.from_spec(spec)
            engine = open_engine(source.fingerprint, spec.preprocessing.input_size, source.build_net, config.engine,
                                 config.cache_dir, spec.name)
            frozen_features = engine  # the head-only phase runs the frozen backbone through the fast engine
            train_x, train_y, _ = self._split_features(source, dataset.train, "train", config)
            val_x, val_y, _ = self._split_features(source, dataset.val, "val", config)
            head_init = fit_probe(train_x, train_y, n_classes, val_x, val_y, l2=config.l2,
                                  class_weight=config.class_weights)
        val_images, val_labels, skipped = decode_split(dataset.val, spec.preprocessing, config.inference_batch, config.workers)
        torch.manual_seed(config.seed)
        backbone = spec.build()
        model = ImageModel(backbone, spec.preprocessing, int(backbone.num_features), n_classes)
        if head_init is not None:
            with torch.no_grad():
                model.head.weight.copy_(torch.from_numpy(head_init.weight))
                model.head.bias.copy_(torch.from_numpy(head_init.bias))
        with tempfile.TemporaryDirectory(prefix="transferkit-train-") as scratch:
            result = train_model(model, config, strategy, image_train_data(dataset.train, spec.preprocessing, config, n_classes),
                                 (val_images, val_labels), n_classes, Path(out) if out is not None else Path(scratch),
                                 resume=resume, frozen_features=frozen_features)
        features = result.model.features
        weights = {k: v.detach().clone() for k, v in features.state_dict().items()}
        fingerprint = fingerprint_of(spec.arch, spec.preprocessing, "finetuned-" + tensor_fingerprint(weights))
        self.config, self.spec_ = config, spec
        self.source_ = FeatureSource(fingerprint, spec.preprocessing, lambda: features.eval(), f"{spec.name} (fine-tuned)")
        self.classes_ = list(dataset.classes)
        self.head_ = ProbeHead(result.model.head.weight.detach().numpy().copy(),
                               result.model.head.bias.detach().numpy().copy(), 0.0)
        self.preprocessing_ = spec.preprocessing
        self.trained_tensors_ = {k: v.numpy() for k, v in weights.items()}
        self.checkpoint_dir_ = None if out is None else checkpoint_dir(out)
        metrics: dict[str, Any] = {"data": dataset.describe(), "strategy": config.strategy,
                                   "epochs_run": len(result.history), "best_epoch": result.best_epoch,
                                   "stopped_early": result.stopped_early, "history": result.history}
        if result.val is not None:
            metrics["val"] = classification_metrics(result.val[1], result.val[0], self.classes_)
        if len(dataset.test):
            from transferkit.modalities.image.training import predict_proba

            test_images, test_labels, skipped_test = decode_split(dataset.test, spec.preprocessing, config.inference_batch,
                                                                  config.workers)
            proba = predict_proba(result.model, test_images, config.inference_batch)
            metrics["test"] = classification_metrics(test_labels, proba, self.classes_)
            skipped += skipped_test
        metrics["skipped_files"] = [{"path": p, "reason": r} for p, r in skipped]
        metrics["train_seconds"] = round(time.perf_counter() - start, 3)
        metrics["trainable_parameters"] = int(result.trainable_parameters)
        self.metrics_ = metrics
        self.is_main_process_ = result.is_main
        return self

    def _extract(self, paths: list[str], config: RunConfig | None = None,
                 source: FeatureSource | None = None) -> FeatureResult:
        config = config or self.config
        return extract_features(source or self.source_, paths, engine=config.engine, batch_size=config.inference_batch,
                                workers=config.workers, use_cache=config.cache, cache_dir=config.cache_dir,
                                cache_dtype=config.cache_dtype, show_progress=self.verbose)

    def _split_features(self, source: FeatureSource, split: Split, name: str,
                        config: RunConfig) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
        if not len(split):
            return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), []
        result = self._extract(split.paths, config, source)
        if result.failed:
            listing = "; ".join(f"{p} ({r})" for p, r in result.failed[:5])
            if config.strict:
                raise DataError(f"{len(result.failed)} unreadable image(s) in {name}: {listing}")
            log(f"warning: skipped {len(result.failed)} unreadable image(s) in {name}: {listing}"
                f"{' ...' if len(result.failed) > 5 else ''} (use --strict to stop instead)")
        labels = np.asarray(split.labels, dtype=np.int64)[result.ok]
        return result.features, labels, result.failed

    # -- inference -------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise TransferkitError("this ImageClassifier is not fitted yet; call fit() or ImageClassifier.load()")

    def predict_files(self, files: Iterable[str | Path]) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
        """Probabilities for the files that decode, which ones did, and (path, reason) for those that did not."""
        self._check_fitted()
        result = self._extract([str(f) for f in files])
        return self.head_.predict_proba(result.features) if len(result.features) else np.zeros(
            (0, len(self.classes_)), np.float32), result.ok, result.failed

    def predict_proba(self, inputs: Inputs) -> np.ndarray:
        """Class probabilities, one row per image (files and/or folders, expanded recursively)."""
        files = list_image_inputs([inputs] if isinstance(inputs, (str, Path)) else inputs)
        proba, _, failed = self.predict_files(files)
        if failed:
            raise DataError(f"{failed[0][0]}: cannot read image ({failed[0][1]})")
        return proba

    def predict(self, inputs: Inputs) -> list[str]:
        return [self.classes_[i] for i in self.predict_proba(inputs).argmax(axis=1)]

    def evaluate(self, folder: str | Path) -> dict[str, Any]:
        """Metrics on a labelled folder of ``<class>/*`` (classes must be among the fitted ones)."""
        self._check_fitted()
        split = labelled_split(folder, self.classes_)
        proba, ok, failed = self.predict_files(split.paths)
        if failed and self.config.strict:
            raise DataError(f"{failed[0][0]}: cannot read image ({failed[0][1]})")
        report = classification_metrics(np.asarray(split.labels)[ok], proba, self.classes_)
        report["skipped_files"] = [{"path": p, "reason": r} for p, r in failed]
        report["files"] = [p for p, keep in zip(split.paths, ok) if keep]
        report["predicted"] = proba.argmax(axis=1).tolist()
        return report

    def score(self, folder: str | Path) -> float:
        return self.evaluate(folder)["accuracy"]

    # -- persistence -----------------------------------------------------------------------------------------
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        from transferkit.features.engines import net_tensors
        from transferkit.runs.rundir import training_files, write_run

        self._check_fitted()
        trained = getattr(self, "trained_tensors_", None)
        if trained is not None:  # fine-tuned: the trained weights, not the pretrained backbone's
            tensors = {f"features.{k}": v for k, v in trained.items()}
        else:
            tensors = {f"features.{k}": v for k, v in net_tensors(
                self.source_.fingerprint, self.source_.build_net, self.config.cache_dir, self.config.cache).items()}
        tensors["head.weight"], tensors["head.bias"] = self.head_.weight, self.head_.bias
        meta = {"format": "transferkit-image-1", "arch": self.spec_.arch, "backbone": self.spec_.name,
                "source": self.spec_.source, "fingerprint": self.source_.fingerprint,
                "num_features": str(self.head_.weight.shape[1]), "num_classes": str(len(self.classes_))}
        keep, extra = (), {}
        if trained is not None:
            keep, extra = training_files(path, self.checkpoint_dir_, self.metrics_.get("history", []))
        return write_run(path, config=self.config, classes=self.classes_, preprocessing=self.preprocessing_,
                         tensors=tensors, model_meta=meta, metrics=self.metrics_, overwrite=overwrite,
                         keep=keep, extra_files=extra)

    @classmethod
    def load(cls, path: str | Path) -> "ImageClassifier":
        from transferkit.runs.rundir import read_run, read_tensors

        run = read_run(path)
        clf = cls.__new__(cls)
        clf.config, clf.verbose = run.config, True
        clf.classes_, clf.metrics_, clf.preprocessing_ = run.classes, run.metrics, run.preprocessing
        head = read_tensors(run.model_path, "head.")
        clf.head_ = ProbeHead(head["weight"], head["bias"], float(run.metrics.get("probe", {}).get("l2") or 0))
        clf.spec_ = BackboneSpec(run.model_meta.get("backbone", run.config.backbone), run.model_meta["arch"],
                                 run.model_meta.get("source", "timm"), run.preprocessing, None, pretrained=False)
        clf.source_ = FeatureSource(run.model_meta["fingerprint"], run.preprocessing,
                                    lambda: load_feature_net(run.model_path, clf.spec_), clf.spec_.name)
        return clf


def load_feature_net(model_path: Path, spec: BackboneSpec) -> Any:
    """Rebuild the saved feature network (normalisation + backbone) from a run's ``model.safetensors``."""
    import torch

    from transferkit.modalities.image.model import FeatureNet
    from transferkit.runs.rundir import read_tensors

    net = FeatureNet(spec.build(), spec.preprocessing)
    state = {k: torch.from_numpy(v) for k, v in read_tensors(model_path, "features.").items()}
    net.load_state_dict(state)
    return net.eval()


def labelled_split(folder: str | Path, classes: list[str]) -> Split:
    """A ``<class>/*`` folder as a split labelled by the fitted class order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; pass a folder with one sub-folder per class")
    files = _scan_split(folder, [])
    unknown = [c for c in files if c not in classes and files[c]]
    if unknown:
        raise DataError(f"{folder / unknown[0]}: class '{unknown[0]}' is not one the model knows ({', '.join(classes)})")
    index = {c: i for i, c in enumerate(classes)}
    split = Split([p for c in sorted(files) for p in files[c]], [index[c] for c in sorted(files) for _ in files[c]])
    if not len(split):
        raise DataError(f"{folder}: no image files found")
    return split
