"""The fine-tuning loop: strategies' phases on ``accelerate`` (devices, DDP, mixed precision, accumulation).

:func:`train_model` trains a model with ``features``, ``backbone`` and ``head`` (images:
:class:`~transferkit.modalities.image.model.ImageModel`; text: :class:`~transferkit.modalities.text.training.
TextModel`) through the strategy's phases and returns the best epoch's weights. The loop itself only
sequences phases, epochs and steps; everything else plugs in through three seams (plugins.py):

* the **adapter** picks which parameters exist and train (train/adapters.py),
* **loss terms** make up the objective (train/losses.py),
* **callbacks** react to events: checkpoints, early stop, Ctrl-C, logging (train/callbacks.py).

Every epoch reseeds the RNGs from ``(seed, epoch)``, so an epoch computes the same thing whether it runs
straight through or after a resume; a Ctrl-C'd epoch resumes after exactly the batches it trained on.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from transferkit.config import RunConfig
from transferkit.errors import RESUME_HINT, TrainingError, first_line
from transferkit.metrics import classification_metrics
from transferkit.plugins import ADAPTERS, CALLBACKS
from transferkit.progress import log, progress
from transferkit.runs.schema import damaged
from transferkit.strategies import Phase, Strategy
from transferkit.train import state as ckpt
from transferkit.train.adapters import AdapterWeights, check_continuation
from transferkit.train.batches import BatchStream
from transferkit.train.callbacks import SIGNAL, Callback, Callbacks, Context, default_callbacks
from transferkit.train.data import TrainData, seed_epoch
from transferkit.train.frozen import FrozenForward
from transferkit.train.losses import Batch, LossTerm, Outputs, TaskInputs, TermSetup, build_terms
from transferkit.train.optim import build_optimizer, build_schedule
from transferkit.train.phases import apply_phase, print_groups, resolve_bn, set_train_mode
from transferkit.train.precision import checkpoint_activations, make_accelerator

if TYPE_CHECKING:
    from accelerate import Accelerator

Predict = Callable[[nn.Module, Any, "Accelerator | None"], np.ndarray]


class Interrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C after writing a checkpoint it can resume from."""


@dataclass
class TrainResult:
    model: nn.Module  # best (or last) weights, on CPU, eval mode, adapters merged
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    trainable_parameters: int = 0
    val: tuple[np.ndarray, np.ndarray] | None = None  # (proba, labels) of the returned model
    stopped_early: bool = False
    seconds: float = 0.0
    is_main: bool = True
    artifacts: dict[str, nn.Module] = field(default_factory=dict)  # what loss terms keep (LossTerm.artifacts)
    adapter: AdapterWeights | None = None  # the adapter's own tensors, before merging (LoRA, BitFit)


def train_model(model: nn.Module, config: RunConfig, strategy: Strategy, data: TrainData,
                val: tuple[Any, np.ndarray] | None, n_classes: int, out: Path, *, resume: bool = False,
                frozen: Callable[[Any], np.ndarray] | None = None, predict: Predict,
                terms: list[LossTerm] | None = None, callbacks: list[Callback] | None = None,
                task: TaskInputs | None = None, resumable: bool = True) -> TrainResult:
    """Train ``model`` through the strategy's phases; checkpoints in ``out/checkpoints`` (``resumable=False``: a
    scratch folder that goes with the process, so an interrupted run says it cannot be resumed).

    ``val`` is (inputs, labels) and ``predict(model, inputs, accelerator)`` turns inputs into probabilities.
    ``frozen`` (a batch's inputs -> features of the untouched pretrained backbone, e.g. the cached ONNX
    engine) serves head-only phases before any backbone training, and loss terms that ask for it. ``terms``
    and ``callbacks`` add to those the config names (Python API; the CLI goes through the registries).
    ``task`` tells loss terms the class names, the pretrained model's own classifier and the modality.
    """
    task = task or TaskInputs()
    task.classes = task.classes or [str(i) for i in range(n_classes)]
    return Trainer(model, config, strategy, data, val, n_classes, Path(out), frozen, predict, terms or [],
                   callbacks or [], task, resumable).fit(resume)


class Trainer:
    """One training run's moving parts; built by :func:`train_model`."""

    def __init__(self, model: nn.Module, config: RunConfig, strategy: Strategy, data: TrainData,
                 val: tuple[Any, np.ndarray] | None, n_classes: int, out: Path, frozen: Callable | None,
                 predict: Predict, terms: list[LossTerm], callbacks: list[Callback],
                 task: TaskInputs, resumable: bool = True) -> None:
        self.config, self.strategy, self.data, self.n_classes, self.predict = config, strategy, data, n_classes, predict
        self.val = val if val is not None and len(val[1]) else None
        self.accelerator = accelerator = make_accelerator(config)
        self.adapter = ADAPTERS.create(config.adapter)
        if config.grad_checkpointing:
            checkpoint_activations(model.backbone)
        check_continuation(self.adapter, model)
        self.model = self.adapter.attach(model)
        self.defaults = self.adapter.defaults(data.defaults)  # the modality's, or the adapter's own LR
        self.terms = build_terms(config, terms)
        self.callbacks = Callbacks(default_callbacks(config) + [CALLBACKS.create(s) for s in config.callbacks]
                                   + callbacks)
        self.frozen = FrozenForward(frozen, data.deterministic) if frozen is not None else None
        self.epochs = config.setting("epochs", self.defaults)
        self.phases = strategy.phases(self.epochs, config.setting("freeze_epochs", self.defaults))
        self.bn_mode = resolve_bn(config, strategy, len(data))
        self.stream = BatchStream(data, config.setting("batch_size", self.defaults), accelerator)
        self.steps_per_epoch = max(1, -(-len(self.stream) // config.grad_accum))
        self.context = Context(config, ckpt.checkpoint_dir(out), accelerator, self.model, ckpt.TrainState(),
                               self.epochs, snapshot=self.snapshot, resumable=resumable)
        self.wrapped: nn.Module | None = None
        self.optimizer = self.scheduler = None
        self.saved: dict[str, Any] | None = None
        self.trainable_total = 0
        # the running epoch's clock and loss sums (see run_epoch)
        self.epoch_start, self.train_seconds, self.seen = 0.0, 0.0, 0
        self.sums: dict[str, torch.Tensor] = {}
        self.task, self.resumable = task, resumable

    # -- the run ---------------------------------------------------------------------------------------------
    def fit(self, resume: bool) -> TrainResult:
        start = time.perf_counter()
        for term in self.terms:
            term.to(self.accelerator.device)
            term.setup(TermSetup(self.model, self.config, self.data, self.n_classes, self.accelerator.device,
                                 self.frozen, self.task))
        self.restore() if resume else self.start_fresh()
        self.accelerator.wait_for_everyone()
        self.model.to(memory_format=torch.channels_last)
        self.callbacks.fire("fit_start", self.context)
        try:
            for phase in self.phases:
                if phase.last_epoch >= self.context.state.epoch and not self.context.state.stopped:
                    self.run_phase(phase)
        finally:
            self.callbacks.fire("fit_end", self.context)
        return self.finish(time.perf_counter() - start)

    def start_fresh(self) -> None:
        if self.accelerator.is_main_process:
            shutil.rmtree(self.context.directory, ignore_errors=True)
            self.context.directory.mkdir(parents=True, exist_ok=True)

    def restore(self) -> None:
        path = self.context.directory / ckpt.LAST
        saved = self.saved = ckpt.check_checkpoint(path, ckpt.load(path))
        ckpt.check_resumable(saved["config"], self.config.to_dict(), path)
        try:  # shapes and names the schema cannot know: the model's own
            self.model.load_state_dict(saved["model"])
            for term in self.terms:
                term.load_state_dict(saved["terms"][term.name])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise damaged(path, "", f"does not fit the model ({first_line(exc)})") from None
        state = self.context.state = ckpt.TrainState(**saved["state"])
        if state.stopped or (state.epoch >= self.epochs and not state.step):
            raise TrainingError(f"{self.context.directory.parent}: this run already finished (epoch {state.epoch}/"
                                f"{self.epochs}{', stopped early' if state.stopped else ''}); nothing to resume. "
                                "Train into a new --out, or start it again with --overwrite")
        try:
            ckpt.set_rng_state(saved["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            raise damaged(path, "rng", f"is not the random generators' state ({first_line(exc)})") from None
        if self.accelerator.is_main_process:
            within = f", step {state.step}" if state.step else ""
            log(f"resuming after epoch {state.epoch}/{self.epochs}{within} (phase '{saved['phase_name']}')")

    def snapshot(self) -> dict[str, Any]:
        """Everything a resumed run needs (see train/state.py)."""
        scaler = self.accelerator.scaler
        return {"config": self.config.to_dict(), "state": self.context.state.to_dict(),
                "phase": self.context.phase.index, "phase_name": self.context.phase.name,
                "trainable": sorted(k for k, p in self.model.named_parameters() if p.requires_grad),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": ckpt.rng_state(), "terms": {t.name: t.state_dict() for t in self.terms}}

    # -- phases ----------------------------------------------------------------------------------------------
    def run_phase(self, phase: Phase) -> None:
        self.context.phase = phase
        extra = {t.name: list(t.parameters()) for t in self.terms if any(True for _ in t.parameters())}
        groups, rows = apply_phase(self.model, phase, self.config, self.strategy, self.adapter, self.bn_mode,
                                   self.defaults, extra)
        self.trainable_total = max(self.trainable_total, sum(r.trainable for r in rows))
        if self.accelerator.is_main_process:
            print_groups(rows, phase, len(self.phases))
        self.optimizer = build_optimizer(groups, self.config)
        self.scheduler = build_schedule(self.optimizer, self.config, phase.epochs * self.steps_per_epoch,
                                        self.steps_per_epoch, self.defaults)
        self.restore_optimizer(phase)
        self.wrapped = self.accelerator.prepare_model(self.model)
        self.optimizer = self.accelerator.prepare_optimizer(self.optimizer)
        # Head-only phases before any backbone training run on the frozen engine's features (single process:
        # under DDP the head's gradients must pass through the wrapped model to be synchronised).
        fast_head = (self.frozen is not None and self.accelerator.num_processes == 1
                     and all(p.train_blocks == 0 for p in self.phases[:phase.index + 1]))
        if self.frozen is not None and not fast_head:  # ~0.5 GB of ONNX Runtime arena, idle while the backbone trains
            self.frozen.release()
        val_features = None
        for epoch in range(max(phase.first_epoch, self.context.state.epoch), phase.last_epoch + 1):
            self.run_epoch(epoch, phase, fast_head)
            if fast_head and self.val is not None and val_features is None:
                val_features = self.val_features()
            self.end_epoch(epoch, phase, fast_head, val_features)
            if self.context.state.stopped:
                break

    def restore_optimizer(self, phase: Phase) -> None:
        saved = self.saved
        state = self.context.state
        if saved is None or saved["phase"] != phase.index or not (state.epoch > phase.first_epoch or state.step):
            return
        trainable = sorted(k for k, p in self.model.named_parameters() if p.requires_grad)
        if trainable != saved["trainable"]:
            raise ckpt.CheckpointError(f"{self.context.directory / ckpt.LAST}: the checkpoint's trainable parameters "
                                       f"do not match phase '{phase.name}'; it belongs to another run")
        try:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            if self.accelerator.scaler is not None and saved.get("scaler"):
                self.accelerator.scaler.load_state_dict(saved["scaler"])
        except (KeyError, RuntimeError, TypeError, ValueError, IndexError) as exc:
            raise damaged(self.context.directory / ckpt.LAST, "optimizer", f"state does not fit the run "
                                                                          f"({first_line(exc)})") from None

    # -- epochs and steps ------------------------------------------------------------------------------------
    def run_epoch(self, epoch: int, phase: Phase, fast_head: bool) -> None:
        context, state = self.context, self.context.state
        context.epoch, context.steps_in_epoch = epoch, len(self.stream)
        self.epoch_start = time.perf_counter() - state.partial.get("seconds", 0.0)
        seed_epoch(self.config.seed, epoch)
        set_train_mode(self.model, self.bn_mode)
        skip = state.step
        self.sums = {name: torch.zeros((), device=self.accelerator.device)
                     for name in ["loss"] + [f"loss_{t.name}" for t in self.terms]}
        for name, value in state.partial.get("sums", {}).items():
            self.sums[name] += value
        self.seen = int(state.partial.get("seen", 0))
        for term in self.terms:
            term.start_epoch(epoch)
        self.callbacks.fire("epoch_start", context)
        total_steps = max(1, self.epochs * len(self.stream))
        with progress(len(self.stream), f"epoch {epoch + 1}/{self.epochs} ({phase.name})", context.is_main,
                      done=skip) as advance:
            for step, batch in enumerate(self.stream.epoch(epoch, skip), start=skip):
                if skip and step == skip:  # the RNG as it was at the interrupted step (dropout, mixup)
                    ckpt.set_rng_state(self.saved["rng"])
                context.step = step
                batch.progress = (epoch * len(self.stream) + step) / total_steps
                self.train_step(self.stream.transform(batch), fast_head)
                advance(1)
                if self.accelerator.sync_gradients and step + 1 < len(self.stream) and self.stop_requested(SIGNAL):
                    self.interrupt_mid_epoch(step)
        state.step, state.partial = 0, {}
        self.train_seconds = time.perf_counter() - self.epoch_start  # before validation and checkpointing

    def train_step(self, batch: Batch, fast_head: bool) -> None:
        context = self.context
        self.callbacks.fire("batch_start", context)
        with self.accelerator.accumulate(self.wrapped):
            with self.accelerator.autocast():
                outputs = self.forward(batch, fast_head)
                values = {term.name: term(batch, outputs) for term in self.terms}
                loss = sum(term.weight * values[term.name] for term in self.terms)
            context.loss = loss
            self.callbacks.fire("after_loss", context)
            self.accelerator.backward(loss)
            self.callbacks.fire("before_step", context)
            if self.accelerator.sync_gradients and self.config.grad_clip:
                self.accelerator.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                                 self.config.grad_clip)
            self.optimizer.step()
            if self.accelerator.sync_gradients:
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.sums["loss"] += loss.detach() * len(batch)
        for name, value in values.items():
            self.sums[f"loss_{name}"] += value.detach() * len(batch)
        self.seen += len(batch)
        self.callbacks.fire("batch_end", context)

    def forward(self, batch: Batch, fast_head: bool) -> Outputs:
        """Features and logits of the labelled batch and, when there is one, of its unlabelled stream. The two go
        through the network in separate calls: BatchNorm then normalises each domain with its own batch
        statistics (measured on MNIST->USPS: target accuracy 0.68 against 0.24 with one joint batch)."""
        if fast_head:
            features = self.frozen(batch.inputs, batch.index, self.accelerator.device)
            outputs = Outputs(features, self.model.head(features))
            if batch.unlabelled is not None:
                other = torch.from_numpy(self.frozen.compute(batch.unlabelled)).to(self.accelerator.device)
                outputs.unlabelled = Outputs(other, self.model.head(other))
            return outputs
        outputs = Outputs(*self.wrapped(batch.inputs, with_features=True))
        if batch.unlabelled is not None:
            outputs.unlabelled = Outputs(*self.wrapped(batch.unlabelled, with_features=True))
        return outputs

    def stop_requested(self, reason: str) -> bool:
        """Whether any process was asked to stop for ``reason`` (they must all stop at the same step)."""
        return self.on_any_process(self.context.stop_reason == reason)

    def end_requested(self) -> bool:
        """Whether any process was asked to end the run after this epoch: for any reason but Ctrl-C's."""
        return self.on_any_process(self.context.stop_reason not in (None, SIGNAL))

    def on_any_process(self, flag: bool) -> bool:
        if self.accelerator.num_processes > 1:
            flag = bool(self.accelerator.reduce(torch.tensor(float(flag), device=self.accelerator.device), "max"))
        return flag

    def interrupt_mid_epoch(self, step: int) -> None:
        state = self.context.state
        state.step = step + 1
        state.partial = {"sums": {k: float(v) for k, v in self.sums.items()}, "seen": self.seen,
                         "seconds": time.perf_counter() - self.epoch_start}
        self.context.is_best = False
        self.callbacks.fire("save", self.context)
        if self.context.is_main:
            log(f"interrupted in epoch {self.context.epoch + 1} after step {step + 1}/{len(self.stream)}: checkpoint "
                f"saved in {self.context.directory}; {self.resume_hint()}")
        self.accelerator.wait_for_everyone()
        raise Interrupted

    def resume_hint(self) -> str:
        if not self.resumable:
            return "it goes when this process ends (the run writes no run folder), so it cannot be resumed"
        return RESUME_HINT.get() or \
            f"continue with `transferkit train --config {self.context.directory / 'config.yaml'} --resume`"

    # -- end of epoch ----------------------------------------------------------------------------------------
    def end_epoch(self, epoch: int, phase: Phase, fast_head: bool, val_features: torch.Tensor | None) -> None:
        context, state, acc = self.context, self.context.state, self.accelerator
        seen = acc.reduce(torch.tensor(float(self.seen), device=acc.device), "sum").clamp(min=1)
        losses = {name: round(float(acc.reduce(total, "sum") / seen), 6) for name, total in self.sums.items()}
        record: dict[str, Any] = {"epoch": epoch + 1, "phase": phase.name, "train_loss": losses.pop("loss"),
                                  **(losses if len(self.terms) > 1 else {}),
                                  "train_seconds": round(self.train_seconds, 3),
                                  "lr": round(self.optimizer.param_groups[-1]["lr"], 8)}
        context.is_best = False
        if self.val is not None:
            proba = self.head_proba(val_features) if fast_head else self.predict(self.model, self.val[0], acc)
            m = classification_metrics(self.val[1], proba, [str(i) for i in range(self.n_classes)])
            record.update(val_accuracy=m["accuracy"], val_macro_f1=m["macro_f1"], val_loss=m["log_loss"])
            context.is_best = state.observe(record[self.config.metric], epoch + 1, self.config.metric == "val_loss")
        record["seconds"] = round(time.perf_counter() - self.epoch_start, 3)
        state.history.append(record)
        state.epoch, context.record = epoch + 1, record
        self.callbacks.fire("epoch_end", context)
        state.stopped = self.end_requested()
        self.callbacks.fire("save", context)
        acc.wait_for_everyone()
        if state.stopped and context.is_main:
            log(f"{context.stop_reason or 'stopped by another process'}; best was epoch {state.best_epoch}")
        if not state.stopped and epoch < self.phases[-1].last_epoch and self.stop_requested(SIGNAL):
            if context.is_main:
                log(f"interrupted after epoch {epoch + 1}: checkpoint saved in {context.directory}; {self.resume_hint()}")
            raise Interrupted

    def val_features(self) -> torch.Tensor:
        """The validation inputs through the frozen engine, once per head-only phase."""
        features = self.frozen.compute(self.val[0])
        return torch.from_numpy(features).to(self.accelerator.device)

    @torch.no_grad()
    def head_proba(self, features: torch.Tensor) -> np.ndarray:
        return torch.softmax(self.model.head(features).float(), dim=1).cpu().numpy()

    # -- result ----------------------------------------------------------------------------------------------
    def finish(self, seconds: float) -> TrainResult:
        acc, state = self.accelerator, self.context.state
        acc.wait_for_everyone()
        model = self.model
        if self.wrapped is not None:  # drops DDP and the autocast accelerate patched into forward: fp32 from here
            model = acc.unwrap_model(self.wrapped, keep_fp32_wrapper=False)
        best = self.context.directory / ckpt.BEST
        if state.best_epoch is not None and best.is_file():
            try:
                model.load_state_dict(ckpt.load(best)["model"])
            except (KeyError, RuntimeError, TypeError) as exc:  # a resumed run's best.safetensors was edited
                raise damaged(best, "", f"does not fit the model ({first_line(exc)})") from None
        adapter = self.adapter.saved(model, statistics=self.bn_mode == "train")
        model = self.adapter.merge(model).cpu().eval()
        result_val = (self.predict(model, self.val[0], None), self.val[1]) if self.val is not None else None
        trainable = self.trainable_total or sum(p.numel() for p in model.parameters() if p.requires_grad)
        artifacts = {name: module.cpu().eval() for term in self.terms for name, module in term.artifacts().items()}
        return TrainResult(model, state.history, state.best_epoch, state.best, trainable, result_val, state.stopped,
                           seconds, acc.is_main_process, artifacts, adapter)
