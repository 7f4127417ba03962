"""The fine-tuning loop: strategies' phases on ``accelerate`` (devices, DDP, mixed precision, accumulation).

One call, :func:`train_model`, trains a model with a ``backbone`` and a ``head`` (images: :class:`~transferkit.
modeling.ImageModel`; text: :class:`~transferkit.text_training.TextModel`) for the configured epochs:
per phase it sets which parameters train (and BatchNorm's mode), builds the optimiser and schedule, runs the
epochs with checkpoints after each one, tracks the best epoch on the validation metric, stops early, and
returns the best weights. Every epoch reseeds the RNGs from ``(seed, epoch)``, so an epoch computes the same
thing whether it runs straight through or after a resume.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from . import checkpoint as ckpt
from .cache import atomic_write_bytes
from .config import RunConfig
from .data import Split
from .errors import DataError, TransferkitError
from .images import load_rgb
from .metrics import classification_metrics
from .pipeline import decode_batches
from .preprocessing import Preprocessing
from .progress import console, log, progress
from .strategies import Phase, Strategy, backbone_blocks, trainable_blocks

if TYPE_CHECKING:
    from accelerate import Accelerator

SMALL_DATASET = 10_000  # below this many training images, --bn auto freezes BatchNorm statistics


class TrainingError(TransferkitError):
    """Training cannot go on (non-finite loss, nothing to train)."""


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------
class TrainImages(torch.utils.data.Dataset):
    """Training images through a PIL transform that yields float CHW tensors in [0, 1].

    Each sample's augmentation draws from RNGs seeded by ``(seed, epoch, index)`` and leaves the caller's
    RNG untouched, so a batch is the same whichever worker decodes it, with any number of workers, and
    after a resume that skips the batches an interrupted epoch had already trained on.
    """

    def __init__(self, split: Split, transform: Callable, draft_size: int, seed: int = 0) -> None:
        self.paths, self.labels = list(split.paths), list(split.labels)
        self.transform, self.draft_size, self.seed, self.epoch = transform, draft_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            image = load_rgb(self.paths[index], draft_size=self.draft_size)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{self.paths[index]}: cannot read image during training ({exc})") from None
        value = epoch_seed(self.seed, self.epoch) * 1_000_003 + index
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):  # timm draws from `random`, torchvision from torch
            torch.manual_seed(value)
            random.seed(value)
            np.random.seed(value % (2**32))
            try:
                return self.transform(image), self.labels[index]
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)


class EpochSampler(torch.utils.data.Sampler):
    """A shuffled (or class-balanced, with replacement) order that depends only on ``(seed, epoch)``."""

    def __init__(self, labels: list[int], seed: int, balanced: bool = False) -> None:
        self.labels, self.seed, self.balanced, self.epoch = np.asarray(labels), seed, balanced, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        if self.balanced:
            counts = np.bincount(self.labels)
            weights = torch.as_tensor(1.0 / counts[self.labels], dtype=torch.float64)
            order = torch.multinomial(weights, len(self.labels), replacement=True, generator=generator)
        else:
            order = torch.randperm(len(self.labels), generator=generator)
        return iter(order.tolist())


@dataclass
class TrainData:
    """What the loop draws training batches from: ``(inputs, labels)`` pairs, inputs a tensor or a dict of them.

    ``sampler`` orders one epoch from ``(seed, epoch)``; ``batch_sampler`` (optional) groups that order into
    batches (text: similar lengths together); ``collate`` stacks or pads a batch.
    """

    dataset: torch.utils.data.Dataset
    sampler: EpochSampler
    labels: list[int]
    kind: str = "image"  # "image" | "text": default LR, augmentation, layout
    collate: Callable | None = None
    batch_sampler: torch.utils.data.Sampler | None = None
    workers: int = 0

    def __len__(self) -> int:
        return len(self.labels)


def default_workers() -> int:
    """Decoding processes beside training: half the cores, at most 4 (on 2 cores a second worker only
    takes CPU from the training step: 12.1 s vs 8.4 s an epoch, hymenoptera, batch 32)."""
    return min(4, max(1, (torch.get_num_threads() or 2) // 2))


def image_train_data(split: Split, preprocessing: Preprocessing, config: RunConfig) -> TrainData:
    workers = config.workers if config.workers is not None else default_workers()
    dataset = TrainImages(split, train_transform(preprocessing, config.augment), preprocessing.resize_size, config.seed)
    return TrainData(dataset, EpochSampler(split.labels, config.seed, config.balanced_sampler), list(split.labels),
                     workers=workers)


def train_transform(preprocessing: Preprocessing, augment: str) -> Callable:
    """PIL image -> float CHW in [0, 1]; normalisation stays inside the model."""
    if augment == "none":
        def plain(image):
            return torch.from_numpy(preprocessing.resize_and_crop(image)).permute(2, 0, 1).float().div(255.0)

        return plain
    from timm.data import create_transform

    return create_transform(
        preprocessing.input_size, is_training=True, interpolation=preprocessing.interpolation,
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), hflip=0.5, color_jitter=0.0,
        auto_augment="rand-m9-mstd0.5-inc1" if augment == "strong" else None,
    )


def decode_split(split: Split, preprocessing: Preprocessing, batch_size: int,
                 workers: int | None) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """A split decoded once with the evaluation transform (uint8 NHWC), as prediction sees it."""
    images, keep, failed = [], [], []
    for batch in decode_batches(split.paths, preprocessing, batch_size, workers):
        images.append(batch.images)
        keep.extend(batch.indices)
        failed.extend((split.paths[i], reason) for i, reason in batch.failed)
    size = preprocessing.input_size
    array = np.concatenate(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return array, np.asarray(split.labels, dtype=np.int64)[keep], failed


# ----------------------------------------------------------------------------------------------------------
# Parameter groups per phase
# ----------------------------------------------------------------------------------------------------------
@dataclass
class GroupInfo:
    name: str
    tensors: int
    trainable: int
    lr: float | None  # None: frozen
    bn: str


def resolve_bn(config: RunConfig, strategy: Strategy, n_train: int) -> str:
    if config.bn != "auto":
        return config.bn
    if not strategy.pretrained:
        return "train"  # random init: running statistics must be learned
    return "frozen" if n_train < SMALL_DATASET else "train"


def apply_phase(model: nn.Module, phase: Phase, config: RunConfig, strategy: Strategy, bn_mode: str,
                kind: str = "image") -> tuple[list[dict[str, Any]], list[GroupInfo]]:
    """Set ``requires_grad`` for ``phase``; return the optimiser's parameter groups and a row per block.

    ``model`` has a ``backbone`` (the blocks; see strategies.backbone_blocks) and a ``head``."""
    backbone = model.backbone
    blocks = backbone_blocks(backbone)
    flags = trainable_blocks(len(blocks), phase.train_blocks)
    decay = config.layer_decay if config.layer_decay is not None else (
        config.setting("layer_decay", kind) if strategy.name == "gradual" else 1.0)
    decay = decay if phase.layer_decay else 1.0
    base = config.setting("lr", kind)
    params = dict(backbone.named_parameters())
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
        bn_mode = "-"  # nothing to set (transformers use LayerNorm)
    groups: list[dict[str, Any]] = []
    rows: list[GroupInfo] = []

    def add(name: str, named: list[tuple[str, nn.Parameter]], train: bool, scale: float) -> None:
        for _, p in named:
            p.requires_grad_(train)
        n = sum(p.numel() for _, p in named)
        lr = base * scale if train else None
        rows.append(GroupInfo(name, len(named), n if train else 0, lr, bn_mode if train or bn_mode == "-" else "frozen"))
        if train:
            with_wd = [p for k, p in named if p.ndim > 1]
            without = [p for k, p in named if p.ndim <= 1]
            for plist, wd in ((with_wd, config.weight_decay), (without, 0.0)):
                if plist:
                    groups.append({"params": plist, "lr": lr, "weight_decay": wd, "name": name})

    for i, (names, train) in enumerate(zip(blocks, flags)):
        label = f"block {i} ({block_label(names)})"
        add(label, [(k, params[k]) for k in names], train, decay ** (len(blocks) - i))
    add("head", list(model.head.named_parameters()), True, 1.0)
    if not any(r.trainable for r in rows):
        raise TrainingError(f"strategy '{config.strategy}' leaves nothing trainable in phase '{phase.name}'")
    return groups, rows


def block_label(names: list[str]) -> str:
    """A short name for a block's parameters: their common dotted prefix (``blocks.3``, ``encoder.layer.2``)."""
    parts = [n.split(".")[:-1] for n in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    if common:
        return ".".join(common[:4])
    first, last = names[0].split(".")[0], names[-1].split(".")[0]
    return first if first == last else f"{first}..{last}"


def set_train_mode(model: nn.Module, bn_mode: str) -> None:
    """Train mode, except modules whose parameters are all frozen, and BatchNorm when its statistics are frozen."""
    model.train()
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            module.eval()
        if bn_mode == "frozen" and isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def print_groups(rows: list[GroupInfo], phase: Phase, n_phases: int) -> None:
    from rich.table import Table

    table = Table(title=f"phase {phase.index + 1}/{n_phases} '{phase.name}': epochs {phase.first_epoch + 1}-"
                        f"{phase.last_epoch + 1}")
    for column in ("group", "tensors", "trainable params", "LR", "BN"):
        table.add_column(column, justify="left" if column == "group" else "right")
    for r in rows:
        table.add_row(r.name, str(r.tensors), f"{r.trainable:,}", "frozen" if r.lr is None else f"{r.lr:.3g}", r.bn)
    table.add_row("total", str(sum(r.tensors for r in rows)), f"{sum(r.trainable for r in rows):,}", "", "")
    console.print(table)


# ----------------------------------------------------------------------------------------------------------
# Optimiser and schedule
# ----------------------------------------------------------------------------------------------------------
def build_optimizer(groups: list[dict[str, Any]], config: RunConfig) -> torch.optim.Optimizer:
    lr = groups[-1]["lr"]  # every group carries its own LR
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr)


def build_schedule(optimizer: torch.optim.Optimizer, config: RunConfig, total: int, steps_per_epoch: int,
                   kind: str = "image") -> torch.optim.lr_scheduler.LRScheduler:
    """A per-optimiser-step schedule over ``total`` steps, after the configured epochs of linear warm-up."""
    from torch.optim import lr_scheduler as S

    total = max(1, total)
    warmup = min(total - 1, round(config.setting("warmup", kind) * steps_per_epoch))
    if config.schedule == "one-cycle":
        return S.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total,
                            pct_start=max(warmup / total, 0.05) if warmup else 0.25)
    rest = total - warmup
    if config.schedule == "cosine":
        main = S.CosineAnnealingLR(optimizer, T_max=max(1, rest))
    elif config.schedule == "step":
        main = S.StepLR(optimizer, step_size=max(1, rest // 3), gamma=0.1)
    elif config.schedule == "multistep":
        main = S.MultiStepLR(optimizer, milestones=[max(1, rest // 2), max(2, rest * 3 // 4)], gamma=0.1)
    else:
        main = S.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if not warmup:
        return main
    return S.SequentialLR(optimizer, [S.LinearLR(optimizer, start_factor=0.01, total_iters=warmup), main],
                          milestones=[warmup])


# ----------------------------------------------------------------------------------------------------------
# Loss and evaluation
# ----------------------------------------------------------------------------------------------------------
def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None) -> torch.Tensor:
    log_p = torch.log_softmax(logits.float(), dim=1)
    if class_weights is not None:
        log_p = log_p * class_weights
    return -(targets * log_p).sum(dim=1).mean()


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray, batch_size: int, accelerator: "Accelerator | None" = None,
                  ) -> np.ndarray:
    """Softmax outputs for uint8 NHWC ``images`` (every process computes all rows; small val/test sets)."""
    was_training = model.training
    model.eval()
    device = accelerator.device if accelerator is not None else torch.device("cpu")
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start:start + batch_size]).to(device)
        with (accelerator.autocast() if accelerator is not None else torch.autocast("cpu", enabled=False)):
            out.append(torch.softmax(model(batch).float(), dim=1).cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """Float NCHW in [0, 1] (the training transform's output) back to the engines' uint8 NHWC input."""
    return images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def improved(value: float, best: float | None, name: str) -> bool:
    if best is None:
        return True
    return value < best if name == "val_loss" else value > best


def epoch_seed(seed: int, epoch: int) -> int:
    """One number per (run seed, epoch): sampler order, augmentation and the global RNGs all derive from it."""
    return seed * 100_003 + epoch


def seed_epoch(seed: int, epoch: int) -> None:
    value = epoch_seed(seed, epoch)
    random.seed(value)
    np.random.seed(value % (2**32))
    torch.manual_seed(value)


def tensor_fingerprint(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------
class StopRequest:
    """Ctrl-C (SIGINT) during training asks the loop to stop at the next step boundary, where the optimiser
    state is whole and a checkpoint can be written; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "StopRequest":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log("stopping after this step to save a checkpoint (Ctrl-C again to stop at once)")

    def __exit__(self, *exc: Any) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class Interrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C after writing a checkpoint it can resume from."""

@dataclass
class TrainResult:
    model: nn.Module  # best (or last) weights, on CPU, eval mode
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    trainable_parameters: int = 0
    val: tuple[np.ndarray, np.ndarray] | None = None  # (proba, labels) of the returned model
    stopped_early: bool = False
    seconds: float = 0.0
    is_main: bool = True


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls and convolutions run natively (without them oneDNN emulates, slowly)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(config: RunConfig) -> str:
    """``auto``: bf16 autocast where the hardware has it (CUDA, or a CPU with native bf16), else fp32."""
    if config.precision != "auto":
        return config.precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "no"


def make_accelerator(config: RunConfig) -> "Accelerator":
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    precision = resolve_precision(config)
    return Accelerator(cpu=not cuda, mixed_precision=precision, gradient_accumulation_steps=config.grad_accum,
                       step_scheduler_with_optimizer=False)


def train_model(model: nn.Module, config: RunConfig, strategy: Strategy, train: TrainData,
                val: tuple[Any, np.ndarray] | None, n_classes: int, out: Path, resume: bool = False,
                frozen_features: Callable[[np.ndarray], np.ndarray] | None = None,
                predict: Callable[[nn.Module, Any, "Accelerator | None"], np.ndarray] | None = None) -> TrainResult:
    """Train ``model`` (``backbone`` + ``head``; called on a batch's inputs) in place through the strategy's
    phases; checkpoints in ``out/checkpoints``.

    ``val`` is (inputs, labels) and ``predict(model, inputs, accelerator)`` turns the inputs into class
    probabilities (default: uint8 NHWC images through :func:`predict_proba`).

    ``frozen_features`` (uint8 NHWC -> features of the untouched pretrained backbone, e.g. the cached ONNX
    engine) serves head-only phases that come before any backbone training: the head trains on the same
    augmented batches without torch's far slower forward pass (single process only: under DDP the head's
    gradients must go through the wrapped model to be synchronised).
    Ctrl-C stops at the next step boundary and writes a mid-epoch checkpoint; ``--resume`` skips the batches
    that epoch had trained on (their data is a pure function of seed, epoch and index) and goes on exactly.
    ``$TRANSFERKIT_KILL_AT=EPOCH:STEP`` (1-based) makes the process SIGKILL itself there, and
    ``$TRANSFERKIT_INTERRUPT_AT=EPOCH:STEP`` sends it SIGINT: test hooks.
    """
    import os
    import signal

    kill_at = os.environ.get("TRANSFERKIT_KILL_AT")
    interrupt_at = os.environ.get("TRANSFERKIT_INTERRUPT_AT")
    accelerator = make_accelerator(config)
    main = accelerator.is_main_process
    directory = ckpt.checkpoint_dir(out)
    start_time = time.perf_counter()
    epochs = config.setting("epochs", train.kind)
    phases = strategy.phases(epochs, config.setting("freeze_epochs", train.kind))
    bn_mode = resolve_bn(config, strategy, len(train))
    if predict is None:
        def predict(net: nn.Module, inputs: Any, acc: "Accelerator | None") -> np.ndarray:
            return predict_proba(net, inputs, config.inference_batch, acc)
    mixup = None
    if config.augment == "strong" and train.kind == "image":
        from timm.data import Mixup

        mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=config.label_smoothing, num_classes=n_classes)
    class_weights = None
    if config.class_weights == "auto":
        from .probe import class_balance_weights

        class_weights = torch.as_tensor(class_balance_weights(np.asarray(train.labels), n_classes), dtype=torch.float32)
        class_weights = class_weights.to(accelerator.device)
    sampler = train.sampler
    if train.batch_sampler is not None:
        loader = torch.utils.data.DataLoader(train.dataset, batch_sampler=train.batch_sampler, collate_fn=train.collate,
                                             num_workers=train.workers)
    else:
        batch_size = config.setting("batch_size", train.kind)
        drop_last = mixup is not None and len(train) > batch_size
        loader = torch.utils.data.DataLoader(train.dataset, batch_size=batch_size, sampler=sampler,
                                             collate_fn=train.collate, num_workers=train.workers, drop_last=drop_last)
    loader = accelerator.prepare_data_loader(loader)
    steps_per_epoch = max(1, math.ceil(len(loader) / config.grad_accum))

    # -- state: fresh or resumed ----------------------------------------------------------------------------
    history: list[dict[str, Any]] = []
    best, best_epoch, bad_epochs, start_epoch, stopped = None, None, 0, 0, False
    saved: dict[str, Any] | None = None
    config_dict = config.to_dict()
    if resume:
        saved = ckpt.load(directory / "last.pt")
        ckpt.check_resumable(saved["config"], config_dict, directory / "last.pt")
        model.load_state_dict(saved["model"])
        history, best, best_epoch = saved["history"], saved["best"], saved["best_epoch"]
        bad_epochs, start_epoch, stopped = saved["bad_epochs"], saved["epoch"], saved["stopped"]
        ckpt.set_rng_state(saved["rng"])
        if main:
            within = f", step {saved['step']}" if saved.get("step") else ""
            log(f"resuming after epoch {start_epoch}/{epochs}{within} (phase '{saved['phase_name']}')")
    elif main:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
        config.to_yaml(directory / "config.yaml")
    accelerator.wait_for_everyone()
    model.to(memory_format=torch.channels_last)
    unwrapped, wrapped = model, None
    trainable_total = 0
    resume_step = saved.get("step", 0) if saved is not None else 0

    def write_last(epoch_done: int, phase: Phase, optimizer: Any, scheduler: Any, step: int = 0,
                   partial: dict[str, float] | None = None) -> None:
        """``last.pt`` after ``epoch_done`` whole epochs and ``step`` batches of the next one."""
        ckpt.atomic_torch_save({
            "format": ckpt.FORMAT, "config": config_dict, "epoch": epoch_done, "step": step, "partial": partial,
            "phase": phase.index, "phase_name": phase.name,
            "trainable": sorted(k for k, p in unwrapped.named_parameters() if p.requires_grad),
            "model": unwrapped.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            "rng": ckpt.rng_state(), "history": history, "best": best, "best_epoch": best_epoch,
            "bad_epochs": bad_epochs, "stopped": stopped,
        }, directory / "last.pt")

    def stop_now() -> bool:
        flag = torch.tensor(float(stop.requested), device=accelerator.device)
        return bool(accelerator.reduce(flag, "max")) if accelerator.num_processes > 1 else stop.requested

    resume_hint = f"continue with `transferkit train --config {directory / 'config.yaml'} --resume`"
    with StopRequest() as stop:
        for phase in phases:
            fast_head = (frozen_features is not None and accelerator.num_processes == 1
                         and all(p.train_blocks == 0 for p in phases[:phase.index + 1]))
            val_features = None
            if phase.last_epoch < start_epoch or stopped:
                continue
            groups, rows = apply_phase(unwrapped, phase, config, strategy, bn_mode, train.kind)
            trainable_total = max(trainable_total, sum(r.trainable for r in rows))
            if main:
                print_groups(rows, phase, len(phases))
            optimizer = build_optimizer(groups, config)
            scheduler = build_schedule(optimizer, config, phase.epochs * steps_per_epoch, steps_per_epoch, train.kind)
            if saved is not None and saved["phase"] == phase.index and (saved["epoch"] > phase.first_epoch
                                                                         or resume_step):
                trainable_now = sorted(k for k, p in unwrapped.named_parameters() if p.requires_grad)
                if trainable_now != saved["trainable"]:
                    raise ckpt.CheckpointError(f"{directory / 'last.pt'}: the checkpoint's trainable parameters do "
                                               f"not match phase '{phase.name}'; it belongs to another run")
                optimizer.load_state_dict(saved["optimizer"])
                scheduler.load_state_dict(saved["scheduler"])
                if accelerator.scaler is not None and saved.get("scaler"):
                    accelerator.scaler.load_state_dict(saved["scaler"])
            wrapped = accelerator.prepare_model(unwrapped)
            optimizer = accelerator.prepare_optimizer(optimizer)
            trainable = [p for p in unwrapped.parameters() if p.requires_grad]
            for epoch in range(max(phase.first_epoch, start_epoch), phase.last_epoch + 1):
                epoch_start = time.perf_counter()
                seed_epoch(config.seed, epoch)
                # accelerate's loader counts its own iterations and passes them to the sampler: set both
                sampler.set_epoch(epoch)
                if hasattr(train.dataset, "set_epoch"):
                    train.dataset.set_epoch(epoch)
                if hasattr(loader, "set_epoch"):
                    loader.set_epoch(epoch)
                set_train_mode(unwrapped, bn_mode)
                total_loss, seen, skip = torch.zeros((), device=accelerator.device), 0, 0
                epoch_loader = loader
                if resume_step and epoch == start_epoch:  # an epoch interrupted by Ctrl-C: skip what it trained on
                    from accelerate import skip_first_batches

                    skip, partial = resume_step, saved.get("partial") or {}
                    epoch_loader = skip_first_batches(loader, skip)
                    total_loss += partial.get("loss_sum", 0.0)
                    seen, epoch_start = int(partial.get("seen", 0)), epoch_start - partial.get("seconds", 0.0)
                with progress(len(loader), f"epoch {epoch + 1}/{epochs} ({phase.name})", main) as advance:
                    advance(skip)
                    for step, (inputs, labels) in enumerate(epoch_loader, start=skip):
                        if skip and step == skip:  # the RNG as it was at the interrupted step (dropout, mixup)
                            ckpt.set_rng_state(saved["rng"])
                        if kill_at or interrupt_at:  # test hooks (see the docstring)
                            here = f"{epoch + 1}:{step + 1}"
                            if kill_at == here:
                                os.kill(os.getpid(), signal.SIGKILL)
                            if interrupt_at == here:
                                os.kill(os.getpid(), signal.SIGINT)
                        if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
                            inputs = inputs.contiguous(memory_format=torch.channels_last)
                        with accelerator.accumulate(wrapped):
                            if mixup is not None and len(labels) % 2 == 0:
                                inputs, targets = mixup(inputs, labels)
                            else:
                                targets = nn.functional.one_hot(labels, n_classes).float()
                                if config.label_smoothing:
                                    targets = targets * (1 - config.label_smoothing) + config.label_smoothing / n_classes
                            with accelerator.autocast():
                                if fast_head:
                                    features = frozen_features(to_uint8_nhwc(inputs))
                                    logits = unwrapped.head(torch.from_numpy(features).to(accelerator.device))
                                else:
                                    logits = wrapped(inputs)
                            loss = soft_cross_entropy(logits, targets, class_weights)
                            finite = torch.isfinite(loss.detach()).float()
                            if accelerator.num_processes > 1:
                                finite = accelerator.reduce(finite, "min")
                            if not bool(finite):
                                where = f"epoch {epoch + 1}, step {step + 1}"
                                kept = (f"the last good checkpoint (epoch {start_epoch if not history else history[-1]['epoch']}) "
                                        f"is kept in {directory}")
                                raise TrainingError(f"loss became {loss.item()} at {where} (phase '{phase.name}'); "
                                                    f"{kept}; lower --lr or add --grad-clip")
                            accelerator.backward(loss)
                            if accelerator.sync_gradients and config.grad_clip:
                                accelerator.clip_grad_norm_(trainable, config.grad_clip)
                            optimizer.step()
                            if accelerator.sync_gradients:
                                scheduler.step()
                            optimizer.zero_grad(set_to_none=True)
                        total_loss += loss.detach() * len(labels)
                        seen += len(labels)
                        advance(1)
                        if accelerator.sync_gradients and step + 1 < len(loader) and stop_now():
                            if main:
                                partial = {"loss_sum": float(total_loss), "seen": seen,
                                           "seconds": time.perf_counter() - epoch_start}
                                write_last(epoch, phase, optimizer, scheduler, step + 1, partial)
                                log(f"interrupted in epoch {epoch + 1} after step {step + 1}/{len(loader)}: "
                                    f"checkpoint saved in {directory}; {resume_hint}")
                            accelerator.wait_for_everyone()
                            raise Interrupted
                # -- end of epoch: metrics, best, checkpoint ------------------------------------------------
                seen_t = accelerator.reduce(torch.tensor(float(seen), device=accelerator.device), "sum")
                train_loss = float(accelerator.reduce(total_loss, "sum") / seen_t.clamp(min=1))
                train_seconds = time.perf_counter() - epoch_start  # before validation and checkpointing
                record: dict[str, Any] = {"epoch": epoch + 1, "phase": phase.name, "train_loss": round(train_loss, 6),
                                          "train_seconds": round(train_seconds, 3),
                                          "lr": round(optimizer.param_groups[-1]["lr"], 8)}
                is_best = False
                if val is not None and len(val[1]):
                    if fast_head:
                        if val_features is None:  # the backbone is frozen in this phase: embed val once
                            val_features = torch.from_numpy(frozen_features(val[0])).to(accelerator.device)
                        with torch.no_grad():
                            proba = torch.softmax(unwrapped.head(val_features).float(), dim=1).cpu().numpy()
                    else:
                        proba = predict(unwrapped, val[0], accelerator)
                    m = classification_metrics(val[1], proba, [str(i) for i in range(n_classes)])
                    record.update(val_accuracy=m["accuracy"], val_macro_f1=m["macro_f1"], val_loss=m["log_loss"])
                    value = record[config.metric]
                    if improved(value, best, config.metric):
                        best, best_epoch, bad_epochs, is_best = value, epoch + 1, 0, True
                    else:
                        bad_epochs += 1
                    if config.early_stop and bad_epochs >= config.early_stop:
                        stopped = True
                record["seconds"] = round(time.perf_counter() - epoch_start, 3)
                history.append(record)
                if main:
                    if is_best:
                        ckpt.atomic_torch_save({"format": ckpt.FORMAT + "-best", "epoch": epoch + 1,
                                                "model": unwrapped.state_dict()}, directory / "best.pt")
                    write_last(epoch + 1, phase, optimizer, scheduler)
                    atomic_write_bytes(directory / "metrics.jsonl",
                                       "".join(json.dumps(r) + "\n" for r in history).encode())
                    shown = {k: v for k, v in record.items() if k not in ("epoch", "phase")}
                    log(f"epoch {epoch + 1}/{epochs} ({phase.name}): "
                        + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
                accelerator.wait_for_everyone()
                resume_step = 0
                if stop_now() and epoch < phases[-1].last_epoch and not stopped:
                    if main:
                        log(f"interrupted after epoch {epoch + 1}: checkpoint saved in {directory}; {resume_hint}")
                    raise Interrupted
                if stopped:
                    if main:
                        log(f"early stop: no better {config.metric} for {config.early_stop} epoch(s); "
                            f"best was epoch {best_epoch}")
                    break
    accelerator.wait_for_everyone()
    if wrapped is not None:  # drops DDP and the autocast accelerate patched into forward: fp32 from here on
        unwrapped = accelerator.unwrap_model(wrapped, keep_fp32_wrapper=False)
    if best_epoch is not None and (directory / "best.pt").is_file():
        unwrapped.load_state_dict(ckpt.load(directory / "best.pt")["model"])
    unwrapped = unwrapped.cpu().eval()
    result_val = None
    if val is not None and len(val[1]):
        result_val = (predict(unwrapped, val[0], None), val[1])
    if not trainable_total:
        trainable_total = sum(p.numel() for p in unwrapped.parameters() if p.requires_grad)
    return TrainResult(unwrapped, history, best_epoch, best, trainable_total, result_val, stopped,
                       time.perf_counter() - start_time, main)
