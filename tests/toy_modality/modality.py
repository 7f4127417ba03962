"""The toy modality itself (see the package docstring): every hook of transferkit.modalities.base.Modality."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from transferkit.config import FINETUNE_DEFAULTS, RunConfig
from transferkit.errors import DataError, TransferkitError
from transferkit.features.graphs import export_graph
from transferkit.modalities.base import (Decide, Defaults, Featurized, LabelledData, Misclassified, RunParts, Split,
                                         sort_classes, stratified_indices)
from transferkit.runs.integrity import content_fingerprint
from transferkit.train.data import EpochSampler, TrainData

from toy_modality.network import VectorModel, VectorSpec

SUFFIX = ".vectors"


def read_rows(path: str | Path) -> tuple[list[str], list[str]]:
    """(items: the numbers of each row as text, labels) of a ``.vectors`` file."""
    items, labels = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        label, _, numbers = line.partition(",")
        try:
            [float(x) for x in numbers.split(",")]
        except ValueError:
            raise DataError(f"{path}: line {number} is not numbers; write label,x0,x1,...") from None
        items.append(numbers)
        labels.append(label)
    return items, labels


def as_array(items: Sequence[str]) -> np.ndarray:
    return np.array([[float(x) for x in item.split(",")] for item in items], dtype=np.float32)


def labelled(items: list[str], labels: list[str], classes: list[str], where: Any) -> Split:
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise DataError(f"{where}: label '{unknown[0]}' is not one the model knows ({', '.join(classes)})")
    return Split(items, [classes.index(label) for label in labels])


class VectorModality:
    name = "vector"
    defaults = Defaults(training={**FINETUNE_DEFAULTS, "epochs": 2, "batch_size": 16, "lr": 1e-2, "freeze_epochs": 0},
                        epochs=(1, 1, 2))
    default_backbone = "toy-mlp"
    run_format = "transferkit-vector-1"
    run_files: tuple[str, ...] = ()
    item_key = "vector"
    skipped_key = "skipped_rows"
    data_hint = f"a {SUFFIX} file"

    def accepts(self, data: Any) -> bool:
        return isinstance(data, (str, Path)) and str(data).endswith(SUFFIX) and Path(data).is_file()

    def check(self, config: RunConfig, strategy: Any) -> None:
        if config.weights is None and config.backbone == self.default_backbone:
            raise TransferkitError("backbone toy-mlp: pass --weights with its safetensors file")

    # -- data --------------------------------------------------------------------------------------------------
    def read_training(self, data: Any, labels: Sequence[Any] | None, val_data: Any,
                      config: RunConfig) -> LabelledData:
        items, names = read_rows(data)
        classes = sort_classes(names)
        train = labelled(items, names, classes, data)
        if val_data is not None:
            return LabelledData(classes, train, labelled(*read_rows(val_data), classes, val_data),
                                val_source=str(val_data), held_out=True)
        train_idx, val_idx = stratified_indices(train.labels, config.val_fraction, config.seed)
        return LabelledData(classes, train.take(train_idx), train.take(val_idx),
                            val_source=f"{config.val_fraction:g} of train, stratified, seed {config.seed}")

    def read_labelled(self, data: Any, labels: Sequence[Any] | None, classes: list[str],
                      config: RunConfig) -> tuple[Split, list[dict[str, Any]]]:
        return labelled(*read_rows(data), classes, data), []

    def predict_inputs(self, inputs: Any, config: RunConfig, text: bool = False) -> list[dict[str, Any]]:
        if isinstance(inputs, (str, Path)) and str(inputs).endswith(SUFFIX):
            return [{"input": item} for item in read_rows(inputs)[0]]
        return [{"input": str(item)} for item in ([inputs] if isinstance(inputs, str) else inputs)]

    # -- backbone and features ---------------------------------------------------------------------------------
    def backbones(self) -> list[dict[str, Any]]:
        return [{"name": self.default_backbone, "source": "a safetensors file (--weights)", "offline": True,
                 "needs": None, "input_size": None, "num_features": None}]

    def resolve(self, config: RunConfig, strategy: Any) -> VectorSpec:
        return VectorSpec(config.backbone, "file", str(config.weights), config.pretrained and strategy.pretrained)

    def spec_from_run(self, run: Any) -> VectorSpec:
        fingerprint = content_fingerprint(run.model_path, run.model_meta, run.preprocessing, ())
        return VectorSpec(run.model_meta["backbone"], "run", str(run.model_path), fixed_fingerprint=fingerprint)

    def build_net(self, spec: VectorSpec) -> torch.nn.Module:
        return spec.build()

    def featurize(self, spec: VectorSpec, items: list[str], config: RunConfig,
                  build_net: Callable[[], torch.nn.Module], show_progress: bool,
                  calibrate_on: list[str] | None = None) -> Featurized:
        with torch.inference_mode():
            features = build_net()(torch.from_numpy(as_array(items))).numpy() if items else np.zeros((0, 0))
        return Featurized(features.astype(np.float32), np.ones(len(items), bool), [],
                          {"cached": 0, "extracted": len(items), "seconds": 0.0, "engine": "torch"})

    # -- fine-tuning -------------------------------------------------------------------------------------------
    def build_model(self, spec: VectorSpec, n_classes: int) -> VectorModel:
        return VectorModel(spec.build(), n_classes)

    def train_data(self, spec: VectorSpec, split: Split, config: RunConfig, n_classes: int) -> TrainData:
        dataset = torch.utils.data.TensorDataset(torch.from_numpy(as_array(split.items)), torch.tensor(split.labels))
        return TrainData(dataset, EpochSampler(split.labels, config.seed), list(split.labels),
                         defaults=self.defaults.training, deterministic=True, items=list(split.items))

    def eval_inputs(self, spec: VectorSpec, split: Split,
                    config: RunConfig) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
        return as_array(split.items), np.asarray(split.labels, dtype=np.int64), []

    def predictor(self, spec: VectorSpec, config: RunConfig) -> Callable[..., np.ndarray]:
        def predict(model: torch.nn.Module, vectors: np.ndarray, accelerator: Any) -> np.ndarray:
            was = model.training
            model.eval()
            with torch.inference_mode():
                proba = torch.softmax(model(torch.from_numpy(vectors)).float(), -1).numpy()
            model.train(was)
            return proba
        return predict

    def frozen_forward(self, spec: VectorSpec, config: RunConfig) -> None:
        return None

    def engine_file(self, spec: VectorSpec) -> str:
        return "vectors.onnx"

    def export_engine(self, spec: VectorSpec, net: torch.nn.Module, path: Path) -> None:
        example = (torch.zeros((2, net.inner.in_features)),)
        export_graph(net, example, path, ["vectors"], "features")

    def source_head(self, spec: VectorSpec, num_features: int) -> None:
        return None

    # -- run folder --------------------------------------------------------------------------------------------
    def run_details(self, spec: VectorSpec, config: RunConfig) -> dict[str, Any]:
        return {}

    def run_parts(self, spec: VectorSpec, config: RunConfig) -> RunParts:
        return RunParts({"dim": str(spec.dim)}, {"kind": "vector", "dim": spec.dim})

    # -- export, serve, report, auto, ``transferkit backbones`` ------------------------------------------------
    def inputs(self, clf: Any) -> Any:
        from toy_modality.inputs import VectorInputs

        return VectorInputs(clf)

    def show_errors(self, errors: list[Misclassified], embed: Any) -> str:
        rows = "".join(f"<tr><td>{html.escape(e.item)}</td><td>{html.escape(str(e.true))}</td>"
                       f"<td>{html.escape(str(e.predicted))}</td><td>{e.confidence:.2f}</td></tr>" for e in errors)
        head = "<tr><th>vector</th><th>true</th><th>predicted</th><th>p</th></tr>"
        return f'<table class="errors vectors">{head}{rows}</table>'

    def derive(self, dataset: LabelledData, config: RunConfig, decide: Decide) -> dict[str, Any]:
        return {"dim": len(dataset.train.items[0].split(","))}

    def input_label(self, row: dict[str, Any]) -> str:
        return "vector"


VECTORS = VectorModality()
