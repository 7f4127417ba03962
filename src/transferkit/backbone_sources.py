"""Backbone sources: where a backbone name comes from, each one module that owns its family's facts.

A :class:`BackboneSource` resolves the names it claims to a torch-free spec, builds the network, lists its rows
for ``transferkit backbones``, reads the pretrained classifier (the source head), groups a network's parameters
into blocks (gradual unfreezing, layer-wise decay), names its LoRA target presets, the width of its networks' pooled
features, and how a weights file and the run's input size fit its network. Sources are tried in the
order of :data:`SOURCES`, as timm's ``@register_model`` fills its tables: a new source is a new module plus one
line below. Entries are ``"module:attribute"`` references imported only when asked (this module imports neither
torch nor the sources), or objects given to :meth:`SourceRegistry.register` (a test, a user's source).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from transferkit.errors import BackboneError
from transferkit.registry import load_ref

if TYPE_CHECKING:
    import torch
    from torch import nn


class BackboneSource:
    """One family of backbones. Every method has a neutral default, so a source states only what it knows."""

    name: ClassVar[str] = ""
    modality: ClassVar[str] = "image"  # which modality resolves its names
    prefix: ClassVar[str] = ""  # names such as ``timm:<arch>`` carry it (error messages list them)
    lora_targets: ClassVar[tuple[tuple[str, str], ...]] = ()  # (family, module-name regex), tried in order

    def claims(self, name: str) -> bool:
        """Whether ``name`` is one of this source's backbones (the first source claiming a name resolves it)."""
        return False

    def resolve(self, name: str, **options: Any) -> Any:
        """The torch-free spec of ``name`` (image: weights, pretrained; text: pooling, layers, cache_dir)."""
        raise BackboneError(f"backbone '{name}': source {self.name} cannot resolve it")

    def build(self, spec: Any) -> "nn.Module":
        """The feature network of ``spec``, with the source's own pretrained weights when it asks for them (a weights
        file, packaged or ``--weights``, is loaded by the spec, the same way for every source)."""
        raise BackboneError(f"backbone '{spec.name}': source {self.name} cannot build it")

    def rows(self) -> list[dict[str, Any]]:
        """Rows of ``transferkit backbones``: name, source, offline, needs, input_size, num_features."""
        return []

    def offline_names(self) -> list[str]:
        """Names that work with no network (suggested when a download cannot happen)."""
        return []

    def source_head(self, spec: Any, num_features: int) -> "nn.Linear | None":
        """The classifier that came with the pretrained weights (hub weights only; files are read generically)."""
        return None

    def blocks(self, backbone: "nn.Module", names: list[str]) -> list[list[str]] | None:
        """Parameter names grouped into blocks, input end first, for networks of this family; else None."""
        return None

    def lora_presets(self, backbone: "nn.Module") -> tuple[tuple[str, str], ...]:
        """The presets that may fit ``backbone``, in the order they are tried (a source that knows the network's
        family names only that family's)."""
        return self.lora_targets

    def feature_width(self, backbone: "nn.Module") -> int:
        """The width of what the network of :meth:`build` returns (the new head's input)."""
        return int(backbone.num_features)

    def fit_state(self, model: "nn.Module", state: "dict[str, torch.Tensor]") -> "dict[str, torch.Tensor]":
        """A weights file's tensors made to fit ``model`` (a position table of another size resampled, say)."""
        return state

    def fit_input_size(self, model: "nn.Module", input_size: int) -> None:
        """Fit a network whose input size is part of it to the run's ``input_size``, its weights loaded."""


class SourceRegistry:
    """Names -> sources, in the order names are tried."""

    def __init__(self, builtins: dict[str, str]) -> None:
        self._entries: dict[str, str | BackboneSource] = dict(builtins)

    def register(self, source: BackboneSource, first: bool = False) -> None:
        """Add a source under its name (``first``: tried before the built-ins)."""
        if source.name in self._entries:
            raise BackboneError(f"backbone source '{source.name}' is already registered")
        self._entries = {source.name: source, **self._entries} if first else {**self._entries, source.name: source}

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> BackboneSource:
        entry = self._entries.get(name)
        if entry is None:
            raise BackboneError(f"backbone source '{name}' is not known; known: {', '.join(self._entries)}")
        if isinstance(entry, str):
            entry = self._entries[name] = load_ref(entry)()
        return entry

    def of(self, modality: str) -> Iterator[BackboneSource]:
        """The sources of one modality, in order."""
        return (source for source in map(self.get, self.names()) if source.modality == modality)

    def claiming(self, name: str, modality: str) -> BackboneSource | None:
        return next((source for source in self.of(modality) if source.claims(name)), None)

    def rows(self, modality: str) -> list[dict[str, Any]]:
        return [row for source in self.of(modality) for row in source.rows()]

    def offline_names(self, modality: str) -> list[str]:
        return [name for source in self.of(modality) for name in source.offline_names()]

    def lora_targets(self, backbone: "nn.Module") -> list[tuple[str, str]]:
        """The LoRA presets that may fit ``backbone``, in source order (the first that matches it is used)."""
        sources = map(self.get, self.names())
        return list(dict.fromkeys(preset for source in sources for preset in source.lora_presets(backbone)))

    def blocks(self, backbone: "nn.Module", names: list[str]) -> list[list[str]] | None:
        """The first source's grouping that knows this network's family, else None."""
        for source in map(self.get, self.names()):
            blocks = source.blocks(backbone, names)
            if blocks is not None:
                return blocks
        return None


SOURCES = SourceRegistry({
    "packaged": "transferkit.modalities.image.sources.packaged:PackagedSource",
    "timm": "transferkit.modalities.image.sources.timm:TimmSource",
    "torchvision": "transferkit.modalities.image.sources.torchvision:TorchvisionSource",
    "all-minilm-l6-v2": "transferkit.modalities.text.sources.minilm:MiniLMSource",
    "all-mpnet-base-v2": "transferkit.modalities.text.sources.mpnet:MpnetSource",
    "huggingface": "transferkit.modalities.text.sources.huggingface:HuggingFaceSource",
})
