"""The modalities transferkit reads. A new one is a :class:`~transferkit.modalities.base.Modality` added to
:data:`MODALITIES`: ``classifier_for_data`` and ``load_classifier`` ask each in turn."""

from __future__ import annotations

from transferkit.modalities.base import Modality
from transferkit.modalities.image.modality import ImageModality
from transferkit.modalities.text.modality import TextModality

IMAGE = ImageModality()
TEXT = TextModality()
MODALITIES: tuple[Modality, ...] = (IMAGE, TEXT)
