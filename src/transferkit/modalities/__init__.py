"""The modalities transferkit reads. A new one is a :class:`~transferkit.modalities.base.Modality` given to
:func:`register_modality` (one line): ``classifier_for_data`` and ``load_classifier`` ask each in turn, and export,
serve, report, tune and auto ask the run's modality object for what depends on its items."""

from __future__ import annotations

from typing import Any

from transferkit.errors import TransferkitError
from transferkit.modalities.base import Modality
from transferkit.modalities.image.modality import ImageModality
from transferkit.modalities.text.modality import TextModality

IMAGE = ImageModality()
TEXT = TextModality()
MODALITIES: list[Modality] = [IMAGE, TEXT]  # asked in this order; a registered one comes after these


def register_modality(modality: Modality) -> Modality:
    """Add ``modality`` (replacing one of the same name); returns it."""
    MODALITIES[:] = [m for m in MODALITIES if m.name != modality.name] + [modality]
    return modality


def unregister_modality(name: str) -> None:
    MODALITIES[:] = [m for m in MODALITIES if m.name != name]


def modality_named(name: str) -> Modality:
    """The registered modality called ``name`` (a saved search or plan names it)."""
    for modality in MODALITIES:
        if modality.name == name:
            return modality
    raise TransferkitError(f"modality '{name}' is not known; known: {', '.join(m.name for m in MODALITIES)}")


def backbone_tables() -> list[tuple[Modality, list[dict[str, Any]]]]:
    """Each modality with the backbones it lists."""
    return [(modality, modality.backbones()) for modality in MODALITIES]


def all_backbones() -> list[dict[str, Any]]:
    """Every modality's backbones, each row naming its modality (what ``transferkit backbones`` lists)."""
    return [{"modality": modality.name, **row} for modality, rows in backbone_tables() for row in rows]
