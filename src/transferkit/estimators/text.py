"""``TextClassifier``: a pretrained text encoder plus a new head, fitted to a labelled text file.

    >>> clf = TextClassifier(backbone="all-MiniLM-L6-v2").fit("reviews.csv")
    >>> clf.predict(["a gripping, funny film"]), clf.score("test.csv")

The text parts (reading CSV / TSV / JSONL, encoders, embeddings, the run folder's ``tokenizer/`` and
``encoder/config.json``) are :class:`~transferkit.modalities.text.modality.TextModality`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferkit.estimators.core import TransferClassifier
from transferkit.modalities import TEXT
from transferkit.modalities.text.backbone import DEFAULT_TEXT_BACKBONE
from transferkit.modalities.text.modality import TEXT_FORMAT, feature_layers
from transferkit.runs.rundir import run_format

__all__ = ["TextClassifier", "TEXT_FORMAT", "feature_layers", "is_text_run"]


class TextClassifier(TransferClassifier):
    """A pretrained text encoder plus a new head: a linear probe on cached sentence embeddings, or the encoder
    fine-tuned too (``strategy="gradual" | "finetune" | "scratch"``).

    >>> clf = TextClassifier(max_length=64).fit("train.csv")
    >>> clf.predict(["what a waste of time"]), clf.score("test.csv")
    """

    modality = TEXT

    def __init__(self, backbone: str = DEFAULT_TEXT_BACKBONE, strategy: str = "linear-probe", **params: Any) -> None:
        super().__init__(backbone, strategy, **params)

    embed = TransferClassifier.features  # the name text users know for it


def is_text_run(path: str | Path) -> bool:
    return run_format(path) == TEXT_FORMAT
