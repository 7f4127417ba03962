"""Fitting the backbone too (every strategy but ``linear-probe``): the shared training loop, then the trained
network as the run's feature network, under a fingerprint of its weights, with the head in numpy."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from transferkit.config import RunConfig
from transferkit.digests import tensor_fingerprint
from transferkit.heads.linear import load_probe_into, probe_from_linear
from transferkit.heads.probe import ProbeHead
from transferkit.metrics import classification_metrics
from transferkit.modalities.base import LabelledData, Modality, Spec, empty_split_error, skipped_record
from transferkit.strategies import Strategy

if TYPE_CHECKING:
    from torch import nn

    from transferkit.train.data import TrainData

# A second training stream without labels (adapt's target images), built once the backbone's spec is known (its
# preprocessing): the loop draws a batch of it beside each labelled one, and loss terms read it (Batch.unlabelled).
Unlabelled = Callable[[Spec, RunConfig], "TrainData"]
# The model changed before it trains (adapt's bottleneck head, which folds back into a linear head when saved).
Reshape = Callable[["nn.Module"], "nn.Module"]


def tuned_fingerprint(base: str, state: Mapping[str, Any]) -> str:
    """The cache identity of a fine-tuned feature network: its starting point's and its weights' (one scheme
    for every modality), so a tuned network never reads the pretrained one's cached features or engine."""
    return hashlib.blake2b(f"{base}|tuned|{tensor_fingerprint(state)}".encode(), digest_size=12).hexdigest()


@dataclass
class Finetuned:
    """What a fine-tune leaves the estimator: the trained feature network under its own spec, and the head."""

    net: "nn.Module"
    spec: Spec
    head: ProbeHead
    is_main: bool  # False on the other processes of a multi-process run
    source_head: "nn.Module | None"  # LwF's tuned source classifier
    adapter: Any  # the adapter method's files, saved beside the merged model


def finetune(modality: Modality, spec: Spec, config: RunConfig, classes: Sequence[Any], dataset: LabelledData,
             strategy: Strategy, metrics: dict[str, Any], out: str | Path | None, resume: bool,
             head_init: ProbeHead | None, *, unlabelled: Unlabelled | None = None, reshape: Reshape | None = None,
             classifier: type | None = None) -> Finetuned:
    """Train ``modality``'s model of ``spec`` on ``dataset`` (checkpoints in ``out``, a scratch folder without
    it), the head from ``head_init`` when given; ``metrics`` gets the history, val, test and retention.
    ``unlabelled`` and ``reshape`` (see their types above) come from the caller that needs them (``adapt``);
    ``classifier`` is the modality's classifier class, through which a loss term loads or fits another model."""
    import torch  # the training modules import torch: loaded only when a backbone trains

    from transferkit.estimators.retention import source_retention
    from transferkit.train.loop import train_model
    from transferkit.train.losses import TaskInputs

    n_classes = len(classes)
    val_inputs, val_labels, failed = modality.eval_inputs(spec, dataset.val, config)
    if len(dataset.val) and not len(val_labels):
        raise empty_split_error("val", len(dataset.val), failed)
    torch.manual_seed(config.seed)
    model = modality.build_model(spec, n_classes)
    if reshape is not None:
        model = reshape(model)
    if head_init is not None:
        load_probe_into(model.head, head_init)
    predict, frozen = modality.predictor(spec, config), modality.frozen_forward(spec, config)
    task = TaskInputs([str(c) for c in classes], modality.source_head(spec, model.head.in_features), modality,
                      classifier)
    data = modality.train_data(spec, dataset.train, config, n_classes)
    if unlabelled is not None:
        data.unlabelled = unlabelled(spec, config)
    with tempfile.TemporaryDirectory(prefix="transferkit-train-") as scratch:
        result = train_model(model, config, strategy, data,
                             (val_inputs, val_labels) if len(val_labels) else None, n_classes,
                             Path(out) if out is not None else Path(scratch), resume=resume,
                             frozen=frozen, predict=predict, task=task, resumable=out is not None)
    net = result.model.features.eval()
    source_head = result.artifacts.get("source_head")
    metrics.update(epochs_run=len(result.history), best_epoch=result.best_epoch,
                   stopped_early=result.stopped_early, history=result.history)
    if result.val is not None:
        metrics["val"] = classification_metrics(result.val[1], result.val[0], classes)
        if task.source_head is not None and frozen is not None:
            metrics["source_retention"] = source_retention(result.model, source_head or task.source_head,
                                                           task.source_head, val_inputs, frozen, predict)
    if len(dataset.test):
        test_inputs, test_labels, failed_test = modality.eval_inputs(spec, dataset.test, config)
        metrics["test"] = classification_metrics(test_labels, predict(result.model, test_inputs, None), classes)
        failed = failed + failed_test
    metrics[modality.skipped_key] = dataset.skipped + [skipped_record(modality, item, why) for item, why in failed]
    metrics["trainable_parameters"] = int(result.trainable_parameters)
    return Finetuned(net, spec.pinned(tuned_fingerprint(spec.fingerprint, net.state_dict())),
                     probe_from_linear(result.model.head), result.is_main, source_head, result.adapter)
