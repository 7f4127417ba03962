"""Text backbones by name: the text sources of :data:`transferkit.backbone_sources.SOURCES`
(``modalities/text/sources/``: the packaged all-MiniLM-L6-v2, a local model folder or a Hugging Face hub id).

:func:`resolve_text_backbone` returns a torch-free :class:`TextBackboneSpec` whose fingerprint identifies the
weights, pooling, normalisation and layer count; only :meth:`TextBackboneSpec.build` imports transformers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferkit.backbone_sources import SOURCES
from transferkit.digests import file_digest
from transferkit.errors import BackboneError, TransferkitError
from transferkit.modalities.hub import quiet_hub
from transferkit.modalities.text.pooling import pooled_encoder
from transferkit.modalities.text.tokenizer import TextTokenizer, load_text_tokenizer
from transferkit.runs.rundir import read_tensors

if TYPE_CHECKING:
    from torch import nn

DEFAULT_TEXT_BACKBONE = "all-MiniLM-L6-v2"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "config.json")


# ----------------------------------------------------------------------------------------------------------
# Backbones
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextBackboneSpec:
    """What a text backbone name resolves to, before torch or transformers build anything."""

    name: str
    location: str  # local folder or hub id, for from_pretrained
    source: str  # "packaged" | "local" | "hub" | "run"
    pooling: str  # "mean" | "cls"
    normalize: bool  # L2-normalise the pooled embedding (sentence-transformers' Normalize module)
    weights_id: str  # content digest of the weights (local) or the hub id
    layers: int = 1  # the last N encoder layers, each pooled (and normalised), concatenated: last layer first
    tokenizer_location: str = ""
    run_model: str | None = None  # a run's model.safetensors, for source == "run"
    fixed_fingerprint: str | None = None  # a fine-tuned or loaded encoder keeps the fingerprint it was given
    pretrained: bool = True  # False: the same architecture, randomly initialised (the scratch baseline)

    @property
    def fingerprint(self) -> str:
        if self.fixed_fingerprint:
            return self.fixed_fingerprint
        digest = hashlib.blake2b(digest_size=12)
        digest.update(f"text-encoder|{self.weights_id}|{self.pooling}|{int(self.normalize)}".encode())
        if self.layers != 1:  # one layer keeps the fingerprint it had before layers existed (caches stay valid)
            digest.update(f"|layers{self.layers}".encode())
        if not self.pretrained:
            digest.update(b"|random-init")
        return digest.hexdigest()

    def pinned(self, fingerprint: str) -> "TextBackboneSpec":
        return dataclasses.replace(self, fixed_fingerprint=fingerprint)

    def load_tokenizer(self) -> "TextTokenizer":
        location = self.tokenizer_location or self.location
        try:
            with quiet_hub():
                return load_text_tokenizer(location)
        except Exception as exc:  # noqa: BLE001 - hub/network/format failures all mean the same to the user
            if Path(location).is_dir():  # a local folder (a run's tokenizer/): name the file that is damaged
                raise _damaged_folder_error(Path(location), exc) from None
            raise load_error(self.name, exc) from None

    def build(self) -> "nn.Module":
        """encoder + pooling (+ normalisation): (input_ids, attention_mask) int64 -> float32 features
        (``layers`` x hidden size wide)."""
        from transformers import AutoConfig, AutoModel

        try:
            if not self.pretrained:
                model = AutoModel.from_config(AutoConfig.from_pretrained(self.location))
                return self._pooled(model)
            if self.source == "run":
                import torch

                from transferkit.train.adapters import restore_unmerged

                model = AutoModel.from_config(AutoConfig.from_pretrained(self.location))
                net = self._pooled(model)
                state = {k: torch.from_numpy(v) for k, v in read_tensors(self.run_model, "features.").items()}
                restore_unmerged(net.encoder, {k.removeprefix("encoder."): v for k, v in state.items()
                                               if k.startswith("encoder.")}, self.run_model)  # a prompt's tensors
                net.load_state_dict(state)
                return net.eval()
            with quiet_hub():
                model = AutoModel.from_pretrained(self.location)
        except TransferkitError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise load_error(self.name, exc) from None
        return self._pooled(model)

    def _pooled(self, model: Any) -> "nn.Module":
        available = getattr(model.config, "num_hidden_layers", None)
        if available is not None and self.layers > available:
            raise BackboneError(f"feature_layers {self.layers}: text backbone '{self.name}' has only {available} "
                                f"layers; pass --feature-layers {available} or fewer")
        return pooled_encoder(model, self.pooling, self.normalize, self.layers).eval()


def load_error(name: str, exc: Exception) -> BackboneError:
    reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return BackboneError(
        f"text backbone '{name}': cannot load it from the Hugging Face hub or disk ({reason}); offline, pass a "
        f"local model folder (config.json, weights, tokenizer) or use '{DEFAULT_TEXT_BACKBONE}' (packaged)")


def _damaged_folder_error(folder: Path, exc: Exception) -> BackboneError:
    reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    where = folder / "tokenizer.json" if (folder / "tokenizer.json").is_file() else folder
    return BackboneError(f"{where}: cannot read the tokenizer ({reason}); restore this folder from a copy of the "
                         "run or the model, or train the run again")


def _folder_digest(folder: Path) -> str:
    """Content digest of a model folder's weights and config."""
    digest = hashlib.blake2b(digest_size=16)
    found = False
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        found = found or name != "config.json"
        digest.update(f"{name}:{file_digest(path)}|".encode())
    if not found:
        raise BackboneError(f"{folder}: no model weights (model.safetensors or pytorch_model.bin) in this folder; "
                            "pass a Hugging Face model folder saved with save_pretrained()")
    return digest.hexdigest()


def sentence_transformers_settings(folder: Path) -> tuple[str | None, bool]:
    """(pooling, normalize) from a sentence-transformers layout (1_Pooling/config.json, modules.json)."""
    pooling = None
    pooling_file = folder / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        try:
            cfg = json.loads(pooling_file.read_text())
        except ValueError:
            cfg = {}
        if cfg.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif cfg.get("pooling_mode_mean_tokens") or cfg.get("pooling_mode") == "mean":
            pooling = "mean"
    normalize = False
    modules_file = folder / "modules.json"
    if modules_file.is_file():
        try:
            normalize = any("Normalize" in str(m.get("type", "")) for m in json.loads(modules_file.read_text()))
        except (ValueError, AttributeError):
            normalize = False
    return pooling, normalize


def list_text_backbones() -> list[dict[str, Any]]:
    """Every text source's rows (the packaged encoders, whether installed and their embedding width; local
    folders and hub ids)."""
    return SOURCES.rows("text")


def resolve_text_backbone(name: str = DEFAULT_TEXT_BACKBONE, pooling: str | None = None, layers: int = 1,
                          cache_dir: str | Path | None = None) -> TextBackboneSpec:
    """Resolve a name through the first text source that claims it (a packaged alias, a local model folder, a
    hub id); ``pooling`` None = the model's own; ``layers`` > 1 concatenates the pooled outputs of that many final
    layers (see :func:`pooled_encoder`); ``cache_dir``: where a source that assembles its files keeps them."""
    if pooling not in (None, "auto", "mean", "cls"):
        raise BackboneError(f"pooling '{pooling}': expected mean, cls or auto")
    if not isinstance(layers, int) or layers < 1:
        raise BackboneError(f"feature_layers {layers!r}: expected a positive number of final encoder layers")
    source = SOURCES.claiming(name, "text")
    if source is None:
        raise BackboneError(f"text backbone '{name}': no text source knows it; pass a local model folder or a hub id")
    return source.resolve(name, pooling=None if pooling == "auto" else pooling, layers=layers, cache_dir=cache_dir)


def spec_from_folder(name: str, folder: Path, source: str, pooling: str | None, layers: int) -> TextBackboneSpec:
    """The spec of a model folder on disk (config.json, weights, tokenizer), pooling as it says when not given."""
    if not (folder / "config.json").is_file():
        raise BackboneError(f"{folder}: not a Hugging Face model folder (no config.json)")
    st_pooling, normalize = sentence_transformers_settings(folder)
    return TextBackboneSpec(name, str(folder), source, pooling or st_pooling or "mean", normalize,
                            _folder_digest(folder), layers)
