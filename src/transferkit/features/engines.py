"""Inference engines for a frozen feature network: ONNX Runtime on CPU, torch on GPU (or when forced).

Both take ``uint8`` NHWC batches and return float32 features, so the decoder and the cache never care
which one runs. Exported ONNX graphs are cached per model fingerprint and input size.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from transferkit.atomic import atomic_write_bytes
from transferkit.errors import TransferkitError, arg
from transferkit.features.cache import cache_root, claim_root
from transferkit.progress import log
from transferkit.runs.folders import reason

if TYPE_CHECKING:
    from torch import nn

ENGINES = ("auto", "onnx", "torch")


class Engine(Protocol):
    name: str

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def gpu_present() -> bool:
    """Cheap check that avoids importing torch on machines without an NVIDIA device."""
    if not os.path.exists("/dev/nvidiactl"):
        return False
    import torch

    return torch.cuda.is_available()


class OnnxEngine:
    name = "onnx"
    export_seconds = 0.0  # the one-off ONNX export that made this engine (0: it was cached)

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(images)})[0]


class TorchEngine:
    name = "torch"
    export_seconds = 0.0

    def __init__(self, net: "nn.Module", device: str | None = None) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net = net.eval().to(self.device, memory_format=torch.channels_last)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        torch = self.torch
        batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            return self.net(batch).float().cpu().numpy()


def export_atomically(path: Path, export: Callable[[str], None]) -> None:
    """Run ``export(tmp_path)`` quietly (the exporters print pages of diagnostics), then rename the file into
    place: concurrent exporters never see half a model."""
    buffer = io.StringIO()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp.onnx")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            warnings.simplefilter("ignore")
            export(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export_onnx(net: "nn.Module", input_size: int, path: Path) -> None:
    """Export ``net`` (uint8 NHWC -> features) with a dynamic batch dimension, atomically."""
    import torch

    example = torch.zeros((2, input_size, input_size, 3), dtype=torch.uint8)
    export_atomically(path, lambda tmp: torch.onnx.export(
        net.eval(), (example,), tmp, dynamo=True, external_data=False,
        input_names=["images"], output_names=["features"],
        dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096)}},
    ))


def check_precision_device(precision: str) -> None:
    """fp16 autocast needs a CUDA GPU: without one, accelerate would fail late or train in another precision."""
    if precision == "fp16" and not gpu_present():
        raise TransferkitError(f"{arg('precision', 'fp16')}: fp16 autocast needs a CUDA GPU and there is none; use "
                               f"{arg('precision', 'bf16')} or {arg('precision', 'no')} (fp32)")


def engine_dir(fingerprint: str, cache_dir: str | Path | None = None) -> Path:
    """Where a fingerprint's engines live; asking for it creates (and marks) the cache root if needed."""
    return claim_root(cache_root(cache_dir)) / "engines" / fingerprint


def image_engine_file(input_size: int) -> str:
    return f"features-{input_size}.onnx"


def open_engine(fingerprint: str, input_size: int, build_net: Callable[[], "nn.Module"], engine: str = "auto",
                cache_dir: str | Path | None = None, label: str = "") -> Engine:
    """The engine to extract features with; ``build_net`` is only called when a network must be built.

    ``auto`` picks torch on a GPU and ONNX Runtime on CPU. When the ONNX export fails for an architecture,
    it falls back to torch with a one-line notice.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        engine = "torch" if gpu_present() else "onnx"
    if engine == "torch":
        return TorchEngine(build_net())
    path = engine_dir(fingerprint, cache_dir) / image_engine_file(input_size)
    return cached_onnx_engine(path, build_net, lambda net, target: export_onnx(net, input_size, target),
                              {"backbone": label, "input_size": input_size}, label, OnnxEngine, TorchEngine)


def cached_onnx_engine(path: Path, build_net: Callable[[], "nn.Module"],
                       export: Callable[["nn.Module", Path], None], meta: dict, label: str,
                       onnx_engine: Callable[[Path], Engine], torch_engine: Callable[["nn.Module"], Engine]) -> Engine:
    """``onnx_engine(path)``, exporting ``build_net()`` there first if needed (with its tensors and ``meta``).

    When the export fails for an architecture, falls back to ``torch_engine`` with a one-line notice; a
    cached graph that no longer loads (a copy cut short) is exported again.
    """
    if path.exists():
        try:
            return onnx_engine(path)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors for a damaged graph have no common type
            log(f"notice: the cached engine {path} does not load ({first_line(exc)}); exporting it again")
            path.unlink(missing_ok=True)
    log(f"exporting {label or 'backbone'} to ONNX once (cached in {path.parent})")
    start = time.perf_counter()
    net = build_net()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        export(net, path)
        _store_net_tensors(net, path.parent / "features.safetensors")
        atomic_write_bytes(path.parent / "meta.json", json.dumps(meta).encode())
    except Exception as exc:  # noqa: BLE001 - any exporter failure: fall back, say so in one line
        log(f"notice: ONNX export failed for {label or 'this backbone'} ({first_line(exc)}); using torch instead")
        return torch_engine(net)
    engine = onnx_engine(path)
    engine.export_seconds = time.perf_counter() - start  # reported apart: a run's own time excludes it
    return engine


def seed_engine(fingerprint: str, name: str, source: Path, cache_dir: str | Path | None = None) -> None:
    """Make a run's own engine the cached engine ``name`` of its fingerprint: a hard link (a symbolic one across
    file systems), so loading the run neither exports nor copies it."""
    if not source.is_file():
        return
    try:
        target = engine_dir(fingerprint, cache_dir) / name
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.link")
        try:
            try:
                os.link(source, tmp)
            except OSError:
                os.symlink(source.resolve(), tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError:  # a cache that cannot be written: the engine is exported there as before
        pass


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__


def net_tensors(fingerprint: str, build_net: Callable[[], "nn.Module"], cache_dir: str | Path | None = None,
                use_cache: bool = True) -> dict[str, np.ndarray]:
    """The feature network's state dict as numpy arrays, cached beside its engine.

    Saving a probe run then needs no torch: the frozen backbone's tensors are read back from the cache.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = engine_dir(fingerprint, cache_dir) / "features.safetensors" if use_cache else None
    if path is not None and path.exists():
        try:
            return load_file(str(path))
        except (OSError, SafetensorError) as exc:  # damaged: built again below, and stored anew
            log(f"notice: {path} is damaged ({reason(exc)}); rebuilding it")
    net = build_net()
    if path is not None:
        try:
            _store_net_tensors(net, path)
        except (OSError, SafetensorError) as exc:
            log(f"warning: cannot write to the cache {path.parent} ({reason(exc)}); going on without it")
    return {k: v.detach().cpu().contiguous().numpy() for k, v in net.state_dict().items()}


def _store_net_tensors(net: "nn.Module", path: Path) -> None:
    from safetensors.numpy import save_file

    tensors = {k: v.detach().cpu().contiguous().numpy() for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
