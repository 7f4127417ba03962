"""The modalities transferkit reads. A new one is a :class:`~transferkit.modalities.base.Modality` added to
:data:`MODALITIES`: ``classifier_for_data`` and ``load_classifier`` ask each in turn."""

from __future__ import annotations

from typing import Any

from transferkit.modalities.base import Modality
from transferkit.modalities.image.modality import ImageModality
from transferkit.modalities.text.modality import TextModality

IMAGE = ImageModality()
TEXT = TextModality()
MODALITIES: tuple[Modality, ...] = (IMAGE, TEXT)


def all_backbones() -> list[dict[str, Any]]:
    """Every modality's backbones, each row naming its modality (what ``transferkit backbones`` lists)."""
    return [{"modality": modality.name, **row} for modality in MODALITIES for row in modality.backbones()]
