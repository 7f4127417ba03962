"""Hugging Face text encoders: a local model folder (saved with ``save_pretrained``) or a hub id, fetched by
transformers. The family's facts: transformer layers are the blocks (embeddings, one block per layer, the pooler
with the last), and BERT-style attention and MLP layers are the LoRA targets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from transferkit.backbone_sources import BackboneSource
from transferkit.errors import BackboneError
from transferkit.modalities.hub import offline_reason, quiet_hub
from transferkit.modalities.text.backbone import (DEFAULT_TEXT_BACKBONE, WEIGHT_FILES, TextBackboneSpec,
                                                  sentence_transformers_settings, spec_from_folder)

if TYPE_CHECKING:
    from torch import nn

LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|block|blocks|h)\.(\d+)\.")


class HuggingFaceSource(BackboneSource):
    name = "huggingface"
    modality = "text"
    lora_targets: ClassVar[tuple[tuple[str, str], ...]] = (
        ("BERT-style attention and MLP", r"query|key|value|dense"),
    )

    def claims(self, name: str) -> bool:
        return True  # the last text source: any other name is a folder or a hub id

    def resolve(self, name: str, pooling: str | None = None, layers: int = 1, **_: Any) -> TextBackboneSpec:
        if Path(name).expanduser().is_dir():
            return spec_from_folder(name, Path(name).expanduser().resolve(), "local", pooling, layers)
        if name.startswith((".", "/", "~")) or name.count("/") > 1:
            raise BackboneError(f"text backbone '{name}': folder not found; pass an existing local model folder")
        return resolve_hub(name, pooling, layers)

    def build(self, spec: TextBackboneSpec) -> "nn.Module":
        return spec.build()

    def rows(self) -> list[dict[str, Any]]:
        return [{"name": "<model folder>", "source": "local folder", "offline": True,
                 "needs": None, "input_size": None, "num_features": None},
                {"name": "<hub id>", "source": "Hugging Face hub", "offline": False,
                 "needs": "network or HF cache", "input_size": None, "num_features": None}]

    def blocks(self, backbone: "nn.Module", names: list[str]) -> list[list[str]] | None:
        return layer_blocks(names) if any(LAYER_INDEX.search(n) for n in names) else None


def layer_blocks(names: list[str]) -> list[list[str]]:
    """Transformer-style names (``encoder.layer.3.attention...``): what precedes the first layer (embeddings),
    one block per layer index, and what follows the last layer (pooler, final norm) with the last layer."""
    before: list[str] = []
    layers: dict[int, list[str]] = {}
    after: list[str] = []
    for name in names:
        match = LAYER_INDEX.search(name)
        if match:
            layers.setdefault(int(match.group(1)), []).append(name)
        elif layers:
            after.append(name)
        else:
            before.append(name)
    blocks = [before] + [layers[i] for i in sorted(layers)]
    blocks[-1] = blocks[-1] + after
    return blocks


def resolve_hub(name: str, pooling: str | None, layers: int) -> TextBackboneSpec:
    """A hub id: the tokenizer is fetched now (small) so a missing model or no network fails before any work.
    Offline, the copy in the Hugging Face cache is used as a local folder (same fingerprint), if there is one."""
    reason = offline_reason()
    if reason:
        folder = cached_snapshot(name)
        if folder is None:
            raise BackboneError(
                f"text backbone '{name}': not a local folder, not in the Hugging Face cache, and the hub cannot be "
                f"reached ({reason}); pass a local model folder or use '{DEFAULT_TEXT_BACKBONE}' (packaged)")
        st_pooling, normalize = sentence_transformers_settings(folder)
        return TextBackboneSpec(name, str(folder), "hub", pooling or st_pooling or "mean", normalize, f"hub:{name}",
                                layers)
    spec = TextBackboneSpec(name, name, "hub", pooling or "mean", False, f"hub:{name}")
    with quiet_hub():
        spec.load_tokenizer()
        st_pooling, normalize = None, False
        try:  # sentence-transformers models on the hub say how they pool
            from huggingface_hub import hf_hub_download

            folder = Path(hf_hub_download(name, "modules.json")).parent
            hf_hub_download(name, "1_Pooling/config.json")
            st_pooling, normalize = sentence_transformers_settings(folder)
        except Exception:  # noqa: BLE001 - not a sentence-transformers repo: plain mean pooling
            pass
    return TextBackboneSpec(name, name, "hub", pooling or st_pooling or "mean", normalize, f"hub:{name}", layers)


def cached_snapshot(name: str) -> Path | None:
    """The Hugging Face cache's folder of hub model ``name`` when it holds a config and weights, else None."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or not a valid id): the caller says what to do
        return None
    has_weights = any((folder / weights).is_file() for weights in WEIGHT_FILES[:2])
    return folder if has_weights and (folder / "config.json").is_file() else None
