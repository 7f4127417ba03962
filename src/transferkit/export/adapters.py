"""What exporting and serving a run need to know about its modality's inputs: the modality hands them out
(``Modality.inputs``: modalities/image/inputs.py, modalities/text/inputs.py), so nothing here knows one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from transferkit.modalities.base import MODEL_OUTPUT, Batches, ModelInputs  # noqa: F401 - exporter, serve

if TYPE_CHECKING:
    from transferkit.estimators.core import TransferClassifier

OUTPUT = MODEL_OUTPUT


def inputs_for(clf: "TransferClassifier") -> ModelInputs:
    """The inputs of ``clf``'s run, as its modality describes them."""
    return clf.modality.inputs(clf)
