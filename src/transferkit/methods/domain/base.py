"""What every domain-adaptation term shares: the source and target halves of a step's outputs."""

from __future__ import annotations

from torch import nn

from transferkit.errors import TrainingError
from transferkit.methods.domain.bottleneck import feature_width
from transferkit.train.losses import LossTerm, Outputs, TermSetup


class DomainTerm(LossTerm):
    """A loss term comparing the labelled (source) batch with the unlabelled (target) one. ``setup`` records
    the feature width (the bottleneck's when the model has one) and the number of classes."""

    name = "domain"

    def setup(self, setup: TermSetup) -> None:
        if setup.data.unlabelled is None:
            raise TrainingError(f"method {self.name} adapts to a target domain, but this run has no unlabelled "
                                "target images; give `train` --target DIR (again with --resume: the saved config does not "
                                "hold it), or run `transferkit adapt SOURCE --target DIR` (Python: "
                                "DomainAdaptClassifier(target=DIR))")
        self.width, self.n_classes, self.device = feature_width(setup.model), setup.n_classes, setup.device

    def domains(self, outputs: Outputs) -> tuple[Outputs, Outputs]:
        """(source, target) outputs of the step."""
        if outputs.unlabelled is None:  # setup checked the data: only a misuse of the loop gets here
            raise TrainingError(f"method {self.name}: the step has no target batch")
        return outputs, outputs.unlabelled

    def place(self, module: nn.Module) -> nn.Module:
        """A module made in ``setup`` (after the loop moved the term), on the training device."""
        return module.to(self.device)
