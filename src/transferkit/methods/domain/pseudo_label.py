"""Self-training on the target with confidence-thresholded pseudo-labels, FixMatch-style (Sohn et al. 2020):
labels come from the *weak* view (the target stream as the loop draws it), the student learns them on a
*strong* view of the same images (views.py).

The labeller is the model as it stood at the start of the epoch (a teacher snapshot), so an epoch's
pseudo-labels are chosen when it starts and do not drift within it; the snapshot is the term's state,
checkpointed with the run, so a resumed epoch labels exactly as the interrupted one did. Epochs before
``warmup`` (default 1: the first) train on the source only, so the first teacher already knows the task.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn
from torch.func import functional_call

from transferkit.methods.domain.base import DomainTerm
from transferkit.methods.domain.views import strong_view
from transferkit.train.losses import Batch, Outputs, TermSetup


@contextmanager
def running_statistics(model: nn.Module) -> Iterator[None]:
    """BatchNorm normalises the strong views by its running statistics, as evaluation will, and leaves them
    alone. Batch statistics of a target-only, strongly augmented batch are far from those of the source and
    target batches the loop forwards together: learning under them taught a network that fell apart in eval mode
    (MNIST -> USPS: near-uniform target predictions after one pseudo-labelled epoch)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in norms:
        m.eval()
    try:
        yield
    finally:
        for m in norms:
            m.train()


class PseudoLabel(DomainTerm):
    """``--method pseudo-label:weight=W,threshold=T,warmup=E``: cross-entropy of the strong view's logits
    against the teacher's weak-view labels whose probability reaches ``threshold``, averaged over the whole
    target batch (so the term grows as the teacher grows confident). ``confident`` is the last step's share."""

    name = "pseudo-label"

    def __init__(self, weight: float = 1.0, threshold: float = 0.95, warmup: int = 1) -> None:
        super().__init__(weight)
        self.threshold, self.warmup = float(threshold), int(warmup)
        self.teacher: dict[str, torch.Tensor] = {}
        self.teacher_epoch = -1
        self.confident = 0.0

    def setup(self, setup: TermSetup) -> None:
        super().setup(setup)
        # kept out of the module tree: the model's parameters are the loop's to train and save, not this term's
        self.__dict__["student"] = setup.model

    def start_epoch(self, epoch: int) -> None:
        if epoch < self.warmup or epoch == self.teacher_epoch:  # a resumed epoch keeps its restored teacher
            return
        self.teacher = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
        self.teacher_epoch = epoch

    def get_extra_state(self) -> dict[str, Any]:
        return {"epoch": self.teacher_epoch, "teacher": dict(self.teacher)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.teacher_epoch, self.teacher = int(state["epoch"]), dict(state["teacher"])

    @torch.no_grad()
    def label(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's (confidence, class) per image, in eval mode (BatchNorm on running statistics)."""
        model = self.student
        modes = [module.training for module in model.modules()]
        model.eval()
        try:
            logits = functional_call(model, self.teacher, (images,))
        finally:
            for module, mode in zip(model.modules(), modes):
                module.train(mode)
        return torch.softmax(logits.float(), dim=1).max(dim=1)

    def forward(self, batch: Batch, outputs: Outputs) -> torch.Tensor:
        self.domains(outputs)
        zero = outputs.logits.new_zeros(())
        if not self.teacher:
            return zero
        weak = batch.unlabelled.to(outputs.logits.device)
        confidence, labels = self.label(weak)
        keep = confidence >= self.threshold
        self.confident = float(keep.float().mean())
        if int(keep.sum()) < 2:  # BatchNorm in train mode needs two rows
            return zero
        with running_statistics(self.student):
            logits = self.student(strong_view(weak[keep]))
        losses = nn.functional.cross_entropy(logits.float(), labels[keep], reduction="sum")
        return losses / len(weak)
