"""Inference engines for a frozen feature network: ONNX Runtime on CPU (fp32, or calibrated int8), torch on GPU
(or when forced).

All take ``uint8`` NHWC batches (a text encoder's, token ids: modalities/text/encoder.py) and return float32
features, so the decoder and the cache never care which one runs. Exported ONNX graphs are cached per model
fingerprint and input size; int8 graphs also per recipe and calibration sample, and their features apart from
fp32's (:class:`EnginePlan`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

import numpy as np

from transferkit.atomic import atomic_write_bytes, reason
from transferkit.config import ENGINES
from transferkit.errors import TransferkitError, arg, first_line
from transferkit.features.cache import cache_root, claim_root
from transferkit.features.child import in_child
from transferkit.features.graphs import export_graph
from transferkit.features.ranks import cores_per_process
from transferkit.features.quantize import (STATIC_QDQ, Calibration, QuantizationError, Recipe, check_close,
                                           check_sample_size, features_identity, int8_file, int8_files,
                                           items_per_second, quantize_graph, read_record, record_speed,
                                           say_if_slower)
from transferkit.progress import log

if TYPE_CHECKING:
    from torch import nn


class Engine(Protocol):
    name: str
    export_seconds: float  # the one-off ONNX export that made it (0: cached, or no export)

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def gpu_present() -> bool:
    """Cheap check that avoids importing torch on machines without an NVIDIA device."""
    if not os.path.exists("/dev/nvidiactl"):
        return False
    import torch

    return torch.cuda.is_available()


# ONNX Runtime keeps the activations of the largest batch a session has run in its arena for the session's life:
# Lite0 @224 fp32 peaked at 515 MB RSS with 32 images a call, 320 MB with 16, 222 MB with 8, and ran as fast with 8
# (269 img/s against 235 with 32, on 2 cores). So callers batch as they like, and an image engine runs slices of
# at most this many pixels.
ENGINE_PIXELS = 8 * 224 * 224


class OnnxEngine:
    name = "onnx"
    export_seconds = 0.0  # the one-off ONNX export that made this engine (0: it was cached)
    spinning = True  # ONNX Runtime's idle threads spin, waiting for work (its default)

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cores_per_process()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not self.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.path = Path(path)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        step = max(1, ENGINE_PIXELS // (images.shape[1] * images.shape[2]))
        if len(images) <= step:
            return self.session.run(None, {self.input_name: np.ascontiguousarray(images)})[0]
        return np.concatenate([self(images[i:i + step]) for i in range(0, len(images), step)])


class OnnxInt8Engine(OnnxEngine):
    name = "onnx-int8"
    # Spinning threads take the cores the decoding threads need: without it, int8 extraction from files ran
    # 18% faster on 2 cores (fp32 12%; left as it is, bench/int8.py measures it beside).
    spinning = False


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


def export_onnx(net: "nn.Module", input_size: int, path: Path) -> None:
    """Export ``net`` (uint8 NHWC -> features) with a dynamic batch dimension, atomically."""
    import torch

    example = torch.zeros((2, input_size, input_size, 3), dtype=torch.uint8)
    export_graph(net, (example,), path, ["images"], "features")


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


@dataclass
class EnginePlan:
    """The engine a run will use, decided before any work: its name, the fingerprint its features are cached
    under (an int8 engine's differ from fp32's), and how to open it (only when rows are missing)."""

    name: str
    features_fingerprint: str
    open: Callable[[], Engine]
    meta: dict[str, Any] = field(default_factory=dict)  # the feature cache's meta.json (int8: which engine too)


class LazyEngine:
    """The plan's engine, opened when first needed (``opened``: now); ``name`` is "cache" until then."""

    def __init__(self, plan: EnginePlan, opened: bool = False) -> None:
        self.plan, self.engine = plan, plan.open() if opened else None

    def __call__(self) -> Engine:
        if self.engine is None:
            self.engine = self.plan.open()
        return self.engine

    @property
    def name(self) -> str:
        return "cache" if self.engine is None else self.engine.name

    @property
    def export_seconds(self) -> float:
        return 0.0 if self.engine is None else self.engine.export_seconds


@dataclass
class EngineRequest:
    """What a plan is made from: the network's identity and input, and how to build or calibrate it. This is an
    image network's; a text encoder's (modalities/text/encoder.py) says how its engines differ, and the same
    plans serve both."""

    fingerprint: str
    input_size: int
    build_net: Callable[[], "nn.Module"]
    cache_dir: str | Path | None
    label: str
    calibration: Callable[[], Calibration] | None  # the user's own sample; only int8 asks for it
    items: ClassVar[str] = "images"  # what the user's sample is made of, for the log lines
    recipe: ClassVar[Recipe] = STATIC_QDQ
    int8_engine: ClassVar[Callable[[Path], OnnxEngine]] = OnnxInt8Engine

    def engine_file(self) -> str:
        return image_engine_file(self.input_size)

    def fp32_path(self) -> Path:
        return engine_dir(self.fingerprint, self.cache_dir) / self.engine_file()

    def meta(self) -> dict[str, Any]:
        return {"backbone": self.label, "input_size": self.input_size}

    def fp32(self) -> Engine:
        return cached_onnx_engine(self.fp32_path(), self.build_net,
                                  lambda net, target: export_onnx(net, self.input_size, target), self.meta(),
                                  self.label, OnnxEngine, TorchEngine)

    def torch(self) -> Engine:
        return TorchEngine(self.build_net())


def plan_auto(request: EngineRequest) -> EnginePlan:
    """Torch on a GPU, fp32 ONNX Runtime on CPU (int8 is asked for by name: it moves features a little)."""
    return (plan_torch if gpu_present() else plan_onnx)(request)


def plan_onnx(request: EngineRequest) -> EnginePlan:
    return EnginePlan("onnx", request.fingerprint, request.fp32, request.meta())


def plan_torch(request: EngineRequest) -> EnginePlan:
    return EnginePlan("torch", request.fingerprint, request.torch, request.meta())


def plan_engine(fingerprint: str, input_size: int, build_net: Callable[[], "nn.Module"], engine: str = "auto",
                cache_dir: str | Path | None = None, label: str = "",
                calibration: Callable[[], Calibration] | None = None) -> EnginePlan:
    """The engine to extract features with; ``build_net`` is only called when a network must be built, and
    ``calibration`` only when an int8 engine must be calibrated."""
    return plan_request(EngineRequest(fingerprint, input_size, build_net, cache_dir, label, calibration), engine)


def plan_request(request: EngineRequest, engine: str = "auto") -> EnginePlan:
    """The plan named ``engine`` (one of config.ENGINES) for ``request``, an image or a text network's."""
    if engine not in ENGINES.names():
        raise ValueError(f"engine must be one of {tuple(ENGINES.names())}, got {engine!r}")
    return ENGINES.factory(engine)(request)


def open_engine(fingerprint: str, input_size: int, build_net: Callable[[], "nn.Module"], engine: str = "auto",
                cache_dir: str | Path | None = None, label: str = "") -> Engine:
    """The engine itself (see :func:`plan_engine`); ``auto``: torch on a GPU, ONNX Runtime on CPU (torch when
    the export fails). Nothing is calibrated here: an int8 engine needs the training images (:func:`plan_engine`)."""
    return plan_engine(fingerprint, input_size, build_net, engine, cache_dir, label).open()


def plan_int8(request: EngineRequest) -> EnginePlan:
    """The network's int8 engine (``request.recipe``). The first one built for a network stays its engine: later
    runs (predictions on new items included) extract with it, so a head always meets the features it was fitted
    on. Without one, it is built from ``request.calibration()`` (training items only) when first opened."""
    directory, recipe = engine_dir(request.fingerprint, request.cache_dir), request.recipe
    prefix = Path(request.engine_file()).stem
    cached = cached_int8(directory, prefix, request)
    if cached is None and request.calibration is None:
        log(f"notice: no int8 engine is cached for {request.label or 'this backbone'}, and only training "
            f"{request.items} {recipe.needs} one; using the fp32 ONNX engine (its features differ slightly from "
            "int8's)")
        return plan_onnx(request)
    calibration = request.calibration() if cached is None else None
    path = cached.path if cached is not None else directory / int8_file(prefix, calibration, recipe)
    if cached is not None:  # timed when it was built (on this CPU, or not yet: then nothing is said)
        say_if_slower(path, request.label, request.items)
    meta = {**request.meta(), "engine": "onnx-int8", "engine_file": path.name,
            "int8_kernels": read_record(path).get("kernels") if cached is not None else recipe.kernels().tag}
    return EnginePlan("onnx-int8", features_identity(request.fingerprint, path.name),
                      lambda: cached if cached is not None else build_int8(request, path, calibration), meta)


def cached_int8(directory: Path, prefix: str, request: EngineRequest) -> OnnxEngine | None:
    """The first cached int8 engine of ``prefix`` (and the request's recipe) that loads; one that does not (a
    copy cut short, a damaged file) is removed with a notice, and a new one is built."""
    for path in int8_files(directory, prefix, request.recipe) if directory.is_dir() else []:
        try:
            return request.int8_engine(path)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors for a damaged graph have no common type
            log(f"notice: the cached int8 engine {path} does not load ({first_line(exc)}); {request.recipe.verb} "
                "a new one")
            path.unlink(missing_ok=True)
    return None


def build_int8(request: EngineRequest, path: Path, calibration: Calibration) -> Engine:
    """Quantise the fp32 graph (exported first if needed) to ``path`` in a child process, refused if too far
    from fp32 on the user's sample or the sample is too small; its speed against fp32 here is recorded beside it."""
    label, recipe = request.label or "this backbone", request.recipe
    check_sample_size(calibration, recipe, label, request.items)
    start = time.perf_counter()
    if not isinstance(request.fp32(), OnnxEngine):  # the export fell back to torch: there is no graph to quantise
        raise QuantizationError(f"{arg('engine', 'onnx-int8')} needs the ONNX export, which failed for {label}; "
                                f"use {arg('engine', 'torch')}")
    log(f"{recipe.verb} an int8 engine for {label} on {calibration.size} of your {request.items}, once "
        f"(cached in {path.parent})")
    try:
        rates = in_child(lambda: quantize_and_time(request, path, calibration))
        engine = request.int8_engine(path)
    except QuantizationError:
        raise
    except Exception as exc:  # noqa: BLE001 - the quantiser's errors have no common type: one line says why
        raise QuantizationError(f"cannot build the int8 engine for {label} ({first_line(exc)}); use "
                                f"{arg('engine', 'onnx')}") from None
    record_speed(path, recipe.kernels(), rates)
    say_if_slower(path, request.label, request.items)
    engine.export_seconds = time.perf_counter() - start  # the fp32 export too, if it was needed
    return engine


def quantize_and_time(request: EngineRequest, path: Path, calibration: Calibration) -> dict[str, float]:
    """Build and check the int8 engine (in the child), then time it against fp32: {"int8": .., "fp32": items/s}."""
    fp32, limit = request.fp32(), request.recipe.max_mean_distance
    quantize_graph(request.fp32_path(), path, calibration,
                   lambda tmp: check_close(request.int8_engine(tmp), fp32, calibration, request.label, limit),
                   request.recipe)
    return items_per_second({"int8": request.int8_engine(path), "fp32": fp32}, calibration)


def cached_onnx_engine(path: Path, build_net: Callable[[], "nn.Module"],
                       export: Callable[["nn.Module", Path], None], meta: dict, label: str,
                       onnx_engine: Callable[[Path], Engine], torch_engine: Callable[["nn.Module"], Engine]) -> Engine:
    """``onnx_engine(path)``, exporting ``build_net()`` there first if needed (with its tensors and ``meta``).
    When the export fails for an architecture, falls back to ``torch_engine`` with a one-line notice; a cached
    graph that no longer loads (a copy cut short) is exported again."""
    if path.exists():
        try:
            return onnx_engine(path)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors for a damaged graph have no common type
            log(f"notice: the cached engine {path} does not load ({first_line(exc)}); exporting it again")
            path.unlink(missing_ok=True)
    log(f"exporting {label or 'backbone'} to ONNX once (cached in {path.parent})")
    start = time.perf_counter()
    try:  # in a child: the run keeps none of the exporter's memory (features/child.py)
        in_child(lambda: _export_and_store(build_net, export, path, meta))
    except TransferkitError:  # the network itself cannot be built: no fallback would either
        raise
    except Exception as exc:  # noqa: BLE001 - any exporter failure: fall back, say so in one line
        log(f"notice: ONNX export failed for {label or 'this backbone'} ({first_line(exc)}); using torch instead")
        return torch_engine(build_net())
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


def _export_and_store(build_net: Callable[[], "nn.Module"], export: Callable[["nn.Module", Path], None], path: Path,
                      meta: dict) -> None:  # runs in a child: see cached_onnx_engine
    net = build_net()
    path.parent.mkdir(parents=True, exist_ok=True)
    export(net, path)
    _store_net_tensors(net, path.parent / "features.safetensors")
    atomic_write_bytes(path.parent / "meta.json", json.dumps(meta).encode())


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
