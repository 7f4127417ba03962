"""Seconds per training step, measured before any trial is planned: the candidate's network (backbone + head)
at its input size takes a few real training batches forward and backward here, with every parameter trained (the
most a strategy can cost). An epoch is then ``steps x step`` plus scoring the validation split at the measured
inference rate; no trial is planned on a guess."""

from __future__ import annotations

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

    def epoch_seconds(self, n_train: int, n_val: int) -> float:
        steps = -(-n_train // self.batch_size)
        val_batches = -(-n_val // self.batch_size)
        return self.step_seconds * (steps + INFERENCE_SHARE * val_batches)

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "batch_size": self.batch_size, "step_seconds": round(self.step_seconds, 4),
                "setup_seconds": round(self.setup_seconds, 2), "measured_in_seconds": round(self.measured_in, 2),
                "precision": self.precision, "step_seconds_by_precision": {k: round(v, 4) for k, v in
                                                                           self.per_precision.items()}}

    @property
    def settings(self) -> dict[str, Any]:
        """What every trial of this backbone takes from the measurement: the faster precision, if it chose."""
        return {"precision": self.precision} if self.precision else {}


def measure(modality: Modality, config: RunConfig, dataset: LabelledData) -> Cost:
    """Time training steps of ``config.backbone`` (at its input size) on real training batches: :data:`SAMPLE`
    items, doubled while a step is shorter than :data:`MIN_STEP_SECONDS`, then scaled to the batch."""
    import torch

    from transferkit.train.precision import resolve_precision

    start = time.perf_counter()
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
                time.perf_counter() - start, chosen if auto_bf16 else None, per_precision)
    log(f"auto: {config.backbone}: {cost.step_seconds:.2f} s per training step of {batch}"
        + (f" with precision {chosen} (" + ", ".join(f"{k} {v:.2f} s" for k, v in per_precision.items()) + ")"
           if auto_bf16 else "") + f" (measured in {cost.measured_in:.1f} s)")
    return cost


def step_seconds(model: Any, optimizer: Any, data: Any, most: int, bf16: bool) -> tuple[float, int]:
    """A training step's seconds on :data:`SAMPLE` items, doubled (up to ``most``) while a step is shorter than
    :data:`MIN_STEP_SECONDS`; and the items it was timed on."""
    take = min(most, SAMPLE)
    while True:
        seconds = min(timed_steps(model, optimizer, data, take, bf16))
        if seconds >= MIN_STEP_SECONDS or take >= most:
            return seconds, take
        take = min(most, 2 * take)


def timed_steps(model: Any, optimizer: Any, data: Any, take: int, bf16: bool) -> list[float]:
    """Seconds of each of :data:`STEPS` training steps on the first ``take`` items of ``data``."""
    import torch
    from torch.utils.data import default_collate

    inputs, labels = (data.collate or default_collate)([data.dataset[i] for i in range(take)])
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
    return timings[1:]  # the first warms up (allocations, one-off kernels)
