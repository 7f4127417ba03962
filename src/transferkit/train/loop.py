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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from transferkit.train import state as ckpt
from transferkit.atomic import atomic_write_bytes
from transferkit.config import RunConfig
from transferkit.errors import TrainingError
from transferkit.metrics import classification_metrics
from transferkit.progress import log, progress
from transferkit.train.data import TrainData, seed_epoch
from transferkit.train.optim import build_optimizer, build_schedule
from transferkit.train.phases import apply_phase, print_groups, resolve_bn, set_train_mode
from transferkit.train.precision import make_accelerator
from transferkit.modalities.image.training import predict_proba, to_uint8_nhwc
from transferkit.train.strategies import Phase, Strategy

if TYPE_CHECKING:
    from accelerate import Accelerator

SMALL_DATASET = 10_000  # below this many training images, --bn auto freezes BatchNorm statistics




# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------------------
# Loss and evaluation
# ----------------------------------------------------------------------------------------------------------
def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None) -> torch.Tensor:
    log_p = torch.log_softmax(logits.float(), dim=1)
    if class_weights is not None:
        log_p = log_p * class_weights
    return -(targets * log_p).sum(dim=1).mean()


def improved(value: float, best: float | None, name: str) -> bool:
    if best is None:
        return True
    return value < best if name == "val_loss" else value > best


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
        from transferkit.heads.probe import class_balance_weights

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
