"""Seconds per training step, measured before any trial is planned: the candidate's network (backbone + head)
at its input size takes a few real training batches forward and backward here, with every parameter trained (the
most a strategy can cost). An epoch is then ``steps x step`` plus scoring the validation split at the measured
inference rate; no trial is planned on a guess."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from transferkit.config import RunConfig
from transferkit.modalities.base import LabelledData, Modality
from transferkit.progress import log
from transferkit.strategies import parse_strategy

STEPS = 3  # the first warms up (allocations, one-off kernels); the fastest of the others counts (a busy core)
SAMPLE = 8  # items per measured step, scaled to the training batch: decoding and stepping 64 would cost a trial
# Below this, a step's fixed costs dominate and scaling by items over-estimates: Lite0 at 64 px took 0.2 s for 8
# items and 0.56 s for 64 (not 1.6 s); at 224 px 8 items already take longer than this
MIN_STEP_SECONDS = 0.5
INFERENCE_SHARE = 0.35  # a forward pass alone, against a training step (backward is ~2x forward)
SETUP_SECONDS = 8.0  # a fine-tuning trial's fixed cost: building the network, the optimiser, accelerate, saving


@dataclass
class Cost:
    """What one backbone costs on this machine, as measured."""

    backbone: str
    batch_size: int
    step_seconds: float
    setup_seconds: float
    measured_in: float
    precision: str | None = None  # the faster one, where "auto" left bf16 and fp32 to choose from; None: as given
    per_precision: dict[str, float] = field(default_factory=dict)
    image_size: int | None = None  # the input size measured at, where a fine-tune takes a larger one than the data's

    def epoch_seconds(self, n_train: int, n_val: int) -> float:
        steps = -(-n_train // self.batch_size)
        val_batches = -(-n_val // self.batch_size)
        return self.step_seconds * (steps + INFERENCE_SHARE * val_batches)

    def trial_seconds(self, strategy: str, epochs: int, freeze_epochs: int, n_train: int, n_val: int) -> float:
        """A fine-tune's seconds: set-up, then each epoch; a head-only phase's epochs (``gradual``: the backbone
        frozen, forward passes only) at the inference share. Measured: Lite1 at 128 px on CIFAR-10, 34 s for the
        head-only epoch against 160-205 s for each full one."""
        epoch = self.epoch_seconds(n_train, n_val)
        freeze = freeze_epochs if epochs > freeze_epochs else 0  # as plan.py runs a short gradual
        head = sum(p.epochs for p in parse_strategy(strategy).phases(epochs, freeze) if p.train_blocks == 0)
        return self.setup_seconds + epoch * (epochs - head * (1 - INFERENCE_SHARE))

    def affordable_epochs(self, strategy: str, freeze_epochs: int, seconds: float, n_train: int, n_val: int,
                          most: int) -> int:
        """The most epochs (up to ``most``) a fine-tune of ``strategy`` fits into ``seconds``; 0 if none."""
        for epochs in range(most, 0, -1):
            if self.trial_seconds(strategy, epochs, freeze_epochs, n_train, n_val) <= seconds:
                return epochs
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "batch_size": self.batch_size, "step_seconds": round(self.step_seconds, 4),
                "setup_seconds": round(self.setup_seconds, 2), "measured_in_seconds": round(self.measured_in, 2),
                "precision": self.precision, "image_size": self.image_size,
                "step_seconds_by_precision": {k: round(v, 4) for k, v in self.per_precision.items()}}

    @property
    def settings(self) -> dict[str, Any]:
        """What every trial of this backbone takes from the measurement: the faster precision, if it chose; the
        input size, if measured at a larger one than the data's."""
        return {k: v for k, v in (("precision", self.precision), ("image_size", self.image_size)) if v}

    def scaled(self, image_size: int, measured_size: int) -> Cost:
        """A guess at ``image_size`` from this measurement at ``measured_size``: the step in proportion to the pixels
        (only to decide whether measuring there is worth it: no trial is planned on it)."""
        factor = pixel_ratio(image_size, measured_size)
        return dataclasses.replace(self, step_seconds=self.step_seconds * factor, image_size=image_size,
                                   per_precision={k: v * factor for k, v in self.per_precision.items()})


def pixel_ratio(size: int | None, base: int | None) -> float:
    """How many times the pixels of a ``base``-sized square a ``size``-sized one has (1 where either is unknown)."""
    return (size / base) ** 2 if size and base else 1.0


def measure(modality: Modality, config: RunConfig, dataset: LabelledData, image_size: int | None = None) -> Cost:
    """Time training steps of ``config.backbone`` (at its input size, or ``image_size``) on real training batches:
    :data:`SAMPLE` items, doubled while a step is shorter than :data:`MIN_STEP_SECONDS`, then scaled to the batch."""
    import torch

    from transferkit.train.precision import resolve_precision

    start = time.perf_counter()
    config = config.replace(image_size=image_size) if image_size else config
    batch = int(config.setting("batch_size", modality.defaults.training))
    spec = modality.resolve(config.replace(strategy="finetune"), parse_strategy("finetune"))
    n_classes = len(dataset.classes)
    data = modality.train_data(spec, dataset.train.take(range(min(len(dataset.train), batch))),
                               config.replace(workers=0), n_classes)
    model = modality.build_model(spec, n_classes).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    # bf16 autocast is not always the faster where the CPU has it: Lite0 at 64 px took ~1.6x fp32's step here
    auto_bf16 = config.precision == "auto" and resolve_precision(config) == "bf16" and not torch.cuda.is_available()
    built = time.perf_counter()
    per_precision: dict[str, float] = {}
    for precision in ("bf16", "no") if auto_bf16 else (resolve_precision(config),):
        seconds, take = step_seconds(model, optimizer, data, min(len(dataset.train), batch), precision == "bf16")
        # a batch costs in proportion to its items on a CPU (an over-estimate where fixed per-step costs dominate)
        per_precision[precision] = seconds * batch / take
    chosen = min(per_precision, key=per_precision.__getitem__)
    cost = Cost(config.backbone, batch, per_precision[chosen], max(SETUP_SECONDS, built - start),
                time.perf_counter() - start, chosen if auto_bf16 else None, per_precision, image_size)
    log(f"auto: {config.backbone}" + (f" at {image_size} px" if image_size else "")
        + f": {cost.step_seconds:.2f} s per training step of {batch}"
        + (f" with precision {chosen} (" + ", ".join(f"{k} {v:.2f} s" for k, v in per_precision.items()) + ")"
           if auto_bf16 else "") + f" (measured in {cost.measured_in:.1f} s)")
    return cost


def step_seconds(model: Any, optimizer: Any, data: Any, most: int, bf16: bool) -> tuple[float, int]:
    """A training step's seconds on :data:`SAMPLE` items, doubled (up to ``most``) while a step is shorter than
    :data:`MIN_STEP_SECONDS`, its items' loading included; and the items it was timed on."""
    take = min(most, SAMPLE)
    while True:
        timings, loading = timed_steps(model, optimizer, data, take, bf16)
        # the loader's workers share the cores with the step (2 here): their seconds add to it
        seconds = min(timings) + loading
        if seconds >= MIN_STEP_SECONDS or take >= most:
            return seconds, take
        take = min(most, 2 * take)


def timed_steps(model: Any, optimizer: Any, data: Any, take: int, bf16: bool) -> tuple[list[float], float]:
    """Seconds of each of :data:`STEPS` training steps on the first ``take`` items of ``data``, and of loading
    (decoding, augmenting, collating) those items."""
    import torch
    from torch.utils.data import default_collate

    tick = time.perf_counter()
    inputs, labels = (data.collate or default_collate)([data.dataset[i] for i in range(take)])
    loading = time.perf_counter() - tick
    if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:  # as the loop runs it (train/loop.py, batches.py)
        model.to(memory_format=torch.channels_last)  # in place, and a no-op once converted
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    timings = []
    for _ in range(STEPS):
        tick = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, logits = model(inputs, with_features=True)
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.as_tensor(labels))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timings.append(time.perf_counter() - tick)
    return timings[1:], loading  # the first step warms up (allocations, one-off kernels)
