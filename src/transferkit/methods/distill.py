"""Knowledge distillation (Hinton et al. 2015) from a big model into the one being trained, plus an optional
feature regression (FitNets-style: a projection of the student's pooled features onto the teacher's).

The teacher is a finished run folder (any backbone, any strategy) or a backbone name, which gets a linear
probe on the training data first. Its predictions and features for every training item come once, through its
own engine and the feature cache, so distillation costs little more than a plain fine-tune. The loss is

    alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE + features * (1 - cos(proj(s), t))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.errors import BackboneError, TrainingError
from transferkit.methods.soft_targets import softened_kl
from transferkit.modalities import MODALITIES
from transferkit.progress import log
from transferkit.runs.folders import is_run_folder
from transferkit.runs.rundir import run_format
from transferkit.train.losses import Batch, LossTerm, Outputs, TermSetup


def load_teacher(teacher: str, setup: TermSetup) -> Any:
    """The teacher, a fitted classifier of the data's modality (``setup.task.classifier``): a run folder as
    saved, or a backbone (a name, or a model folder such as a bigger sentence encoder) with a probe fitted on the
    training data."""
    classes = setup.task.classes or [str(i) for i in range(setup.n_classes)]
    classifier = setup.task.classifier
    if classifier is None:  # train_model called without an estimator: nothing to load a teacher with
        raise TrainingError("method distill: this run has no classifier class to load its teacher with; train "
                            "through ImageClassifier / TextClassifier or `transferkit train`")
    path = Path(teacher).expanduser()
    if is_run_folder(path) or (path / "model.safetensors").is_file():  # a run, even one holding a file of the user's
        return run_teacher(teacher, path, classifier, classes)
    if teacher.startswith((".", "/", "~")) and not path.exists():  # a path that is not there
        raise TrainingError(f"method distill: teacher={teacher}: no such run folder; give a finished run's folder "
                            "or a backbone name")
    log(f"distill: fitting a linear probe on teacher backbone '{teacher}'")
    config = setup.config
    model = classifier(teacher, "linear-probe", cache_dir=config.cache_dir, engine=config.engine, seed=config.seed)
    model.verbose = False
    try:
        return model.fit(list(setup.data.items), [classes[y] for y in setup.data.labels])
    except BackboneError:
        if not os.path.lexists(path):  # a name: the backbone's own message says why it is not one
            raise
        what = "folder" if path.is_dir() else "file"
        raise TrainingError(f"method distill: teacher={teacher}: a {what}, but not a finished run folder (no "
                            "model.safetensors) nor a backbone's model folder; give the --out folder of a finished "
                            "`transferkit train`, or a backbone name") from None


def run_teacher(teacher: str, path: Path, classifier: Any, classes: list[str]) -> Any:
    """A finished run as the teacher: of the data's modality (``classifier``'s), trained on its classes."""
    modality, saved_as = classifier.modality, run_format(path)
    other = next((m for m in MODALITIES if m.run_format == saved_as and m is not modality), None)
    if other is not None:
        raise TrainingError(f"method distill: teacher {teacher} was trained on {other.name} data, and this "
                            f"run's data is {modality.name}: a teacher reads the same kind of data; give a run "
                            f"trained on {modality.name}, or a {modality.name} backbone")
    model = classifier.load(path)
    found = [str(c) for c in model.classes_]
    if found != classes:
        raise TrainingError(f"method distill: teacher {teacher} has classes {found[:5]}, the data has "
                            f"{classes[:5]}; a teacher must be trained on the same classes")
    return model


class Distillation(LossTerm):
    name = "distill"

    def __init__(self, teacher: str, temperature: float = 4.0, alpha: float = 0.5, features: float = 0.0) -> None:
        super().__init__(weight=1.0)  # the options' ranges: plugins.py, checked when parsed
        self.teacher, self.temperature = str(teacher), float(temperature)
        self.alpha, self.feature_weight = float(alpha), float(features)
        self.target_share = 1.0 - self.alpha

    def setup(self, setup: TermSetup) -> None:
        if not setup.data.items:
            raise TrainingError("method distill: the training data does not list its items; a teacher needs them")
        teacher = load_teacher(self.teacher, setup)
        features = teacher.features(list(setup.data.items))
        if len(features) != len(setup.data.items):
            raise TrainingError(f"method distill: the teacher read {len(features)} of {len(setup.data.items)} "
                                "training items; fix or remove the unreadable ones (--strict lists them)")
        proba = teacher.head_.predict_proba(features)
        self.register_buffer("teacher_log_p", torch.from_numpy(np.log(np.clip(proba, 1e-8, 1.0))).float()
                             .to(setup.device), persistent=False)
        if self.feature_weight:
            self.register_buffer("teacher_features", nn.functional.normalize(torch.from_numpy(features).float(), dim=1)
                                 .to(setup.device), persistent=False)
            self.projection = nn.Linear(setup.model.head.in_features, features.shape[1]).to(setup.device)

    def forward(self, batch: Batch, outputs: Outputs) -> torch.Tensor:
        index = batch.index.to(self.teacher_log_p.device)
        loss = self.alpha * softened_kl(outputs.logits, self.teacher_log_p[index], self.temperature)
        if self.feature_weight:
            projected = nn.functional.normalize(self.projection(outputs.features.float()), dim=1)
            cosine = (projected * self.teacher_features[index]).sum(dim=1)
            loss = loss + self.feature_weight * (1.0 - cosine).mean()
        return loss
