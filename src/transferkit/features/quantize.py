"""Calibrated int8 engines: static QDQ quantisation (ONNX Runtime) of a cached fp32 feature graph.

Static, because dynamic quantisation leaves convolutions in float (issue 16 measured 24 img/s for Lite0);
static QDQ runs them as QLinearConv. The recipe follows measurements on Lite0 @224 (hymenoptera, CIFAR-10,
MNIST, USPS; figures are mean cosine distances of features to fp32, see bench/int8.py for the whole engine):

- int8 weights per output channel: with per-tensor weights the worst feature fell to a cosine of 0.57;
- MinMax calibration is as close as Percentile or Entropy (0.018-0.021 on CIFAR-10) and 3x quicker to build;
  32, 64 or 128 calibration images give the same distances (64 is kept);
- the error comes from the first, high-resolution layers: keeping the graph up to the sixth convolution in
  float takes CIFAR-10 from 0.021 to 0.004 and the digits from 0.02 to 0.003; the graph then runs 1.5x fp32
  instead of 2x (model alone). Keeping three (0.007-0.02) or skipping single layers did not pay;
- ONNX Runtime's graph optimisations (basic level and up) return wrong features (distance 0.24) when a lone
  depthwise convolution between quantised ones stays in float, so every engine is compared with fp32 on its
  calibration images before it is cached, and refused when it is too far off;
- ViTs (linear layers on a residual stream): only Conv / MatMul / Gemm are quantised, none before the 7th
  (vit_small_patch14_reg4_dinov2, random weights with layer scale 0.5, 56 px, u8u8: mean distance 0.0003;
  0.011 with its residual Adds quantised too).

Text encoders take another recipe (:data:`TEXT_DYNAMIC`): dynamic int8 (activations quantised per batch at run time)
with per-channel s8 weights, MatMuls only (embedding Gathers stay float), and the first encoder layer kept in float.
On all-MiniLM-L6-v2 (bench/int8_text.py, probe on the last four layers) it encodes 1.7x faster than fp32 (1.73
rt_polarity, 1.64-1.71 trec, two runs); probe test accuracy rt_polarity -0.5 points (0.7908 vs 0.7955, 37 of 1066
texts flip), trec +0.4 (8 of 500 flip); mean cosine distance to fp32 0.0030 / 0.0026. Quantising every MatMul and
Gather (the earlier recipe) ran 2.1x but lost 0.8 points on rt_polarity (63 flips, mean distance 0.0045); MatMuls
only: -0.8, 2.0x; also keeping the last layer in float: -0.8, 1.6x (the error is not there); keeping every FFN
output MatMul in float halved the distance (0.0020) but still -0.8 at 1.3-1.5x; keeping only layer 0's FFN output:
-1.4 (99 flips) at a lower distance, so single accuracy figures move by several texts by chance; keeping layers 0-1:
-0.1 / +0.4 at 1.47 / 1.52x. The rule that picked it, the fewest float ops within 0.5 points on both sets at
>= 1.5x, gives it on validation figures (rt_polarity -0.42, trec -0.18; no other variant qualifies) as on test:
it sits at the bar, with no margin. Static QDQ lost 3.5 points on rt_polarity, per-tensor weights moved some
embeddings to a cosine of 0.857. Its sample only checks the engine against fp32.

ONNX Runtime's u8 x s8 kernels on x86-64 without VNNI (AVX2, AVX512 before Cascade Lake) add pairs of products in
16 bits, which saturate: on the tests' 64 px images (mean cosine distance to fp32, emulated Haswell / this VNNI
host) u8s8 gave 0.027 / 0.0065, u8s8 with 7-bit weights (``reduce_range``) 0.0155 / 0.0155 (no saturation, less
precision), u8 weights (U8U8, as ONNX Runtime advises) 0.0078 / 0.0078. So the image recipe takes u8 weights on such
CPUs, and s8 where the CPU has int8 dot products (VNNI; aarch64, whose kernels widen before adding): there u8u8 is
slow (half fp32's speed on the VNNI host, Lite0 @224, u8s8 2x fp32 and more). Which kernels built an engine is part
of its identity (:class:`Kernels`). Without VNNI, int8 may be slower than fp32 all the same (an AVX2 EPYC: CIFAR-10
probe 70 img/s against 106): each engine is timed against fp32 once per CPU, and a run says when it is slower.

Calibration data come from the caller (the user's own images or texts, prepared as extraction does them); their
identity names the engine file. The first engine built for a network stays its engine (features/engines.py:
plan_int8), so a head always meets the features it was fitted on; the sample only decides how that one is built.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from transferkit.atomic import atomic_write_bytes
from transferkit.errors import TransferkitError, arg
from transferkit.progress import log

LEADING_FLOAT_CONVS = 6  # weighted layers (in graph order) kept in float with everything before them
CALIBRATION_ITEMS = 64  # MinMax ranges: 32, 64 and 128 images gave the same mean distances
# A sample this small would set the ranges of the engine every later run of the network reuses (and its check
# would only see those few images): a floor, a quarter of the sample the recipe takes, not a measured optimum.
MIN_CALIBRATION_ITEMS = 16
CALIBRATION_ROWS = 2  # images per run of the calibration graph (see BatchReader)
MAX_MEAN_DISTANCE = 0.01  # the recipe measured 0.004 at worst; the optimiser bug above, 0.24
LINEAR_OPS = ("MatMul", "Gemm")
RECIPE = f"qdq-u8s8-perchannel-minmax-float{LEADING_FLOAT_CONVS}-weighted"  # v2: v1 left a ViT all float
INT8_TAG = "int8v2"  # in engine file names: a new recipe gets a new tag, never an old engine
FIRST_LAYER = "/layer.0/"  # the text recipe keeps the nodes of the first encoder layer in float

Batch = np.ndarray | dict[str, np.ndarray]
T = TypeVar("T")


@dataclass(frozen=True)
class Kernels:
    """The int8 types an engine is built with, for the CPU it is built on: ``tag`` goes into its identity."""

    tag: str
    weight_type: str  # onnxruntime.quantization.QuantType's name: QInt8 (s8) or QUInt8 (u8)
    reduce_range: bool = False  # 7-bit weights


DOT_PRODUCT = Kernels("u8s8", "QInt8")  # CPUs with int8 dot products: the fastest, nothing saturates


@dataclass(frozen=True)
class Recipe:
    """How an fp32 graph becomes int8: ``name`` (its settings) goes into the engine file's digest, ``tag`` into
    its name, so a new recipe gets new engines, never an old one."""

    name: str
    tag: str
    quantize: Callable[[Path, Path, Calibration], None]  # fp32 graph, target, sample -> int8 graph at target
    verb: str  # for the log lines: "calibrating a new one"
    needs: str  # "only training images calibrate one"
    max_mean_distance: float | None = None  # the check's bound; None: MAX_MEAN_DISTANCE, read when checking
    no_dot_product: Kernels = Kernels("u8u8", "QUInt8")  # on x86-64 without VNNI (see the module's docstring)
    min_items: int = 1  # the smallest sample that may build the engine every later run reuses

    def kernels(self) -> Kernels:
        """The kernels this recipe builds with on this CPU."""
        return DOT_PRODUCT if int8_dot_product() else self.no_dot_product


@dataclass(frozen=True)
class Calibration:
    """A calibration sample: what identifies it, and its batches of model inputs (produced when needed)."""

    identity: str  # a digest of the sample's files (or texts): it names the engine file it builds
    batches: Callable[[], Iterable[Batch]]  # each an input array (the graph's one input) or {input: array}
    size: int = 0  # items in the sample, for the log line


class QuantizationError(TransferkitError):
    """The int8 engine cannot be built (or is too far from fp32 to be used)."""


def spread(items: Sequence[T], count: int = CALIBRATION_ITEMS) -> list[T]:
    """``count`` items evenly spaced over ``items`` (all of them when fewer): folders list class by class, so an
    even spread meets every class, and the same list always gives the same sample."""
    if len(items) <= count:
        return list(items)
    return [items[(i * len(items)) // count] for i in range(count)]


def digest(*parts: str) -> str:
    return hashlib.blake2b("|".join(parts).encode(), digest_size=12).hexdigest()


def int8_file(prefix: str, calibration: Calibration, recipe: Recipe) -> str:
    """The engine file of ``prefix`` (e.g. ``features-224``) made by ``recipe`` from ``calibration``."""
    return f"{prefix}-{recipe.tag}-{digest(recipe.name, recipe.kernels().tag, calibration.identity)[:16]}.onnx"


def int8_files(directory: Path, prefix: str, recipe: Recipe) -> list[Path]:
    """Cached int8 engines of ``prefix`` and ``recipe``, the first built first: that one stays the engine of its
    network."""
    files = [p for p in directory.glob(f"{prefix}-{recipe.tag}-*.onnx") if p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def features_identity(fingerprint: str, engine_file: str) -> str:
    """Where an int8 engine's features are cached: apart from fp32's, and from another calibration's."""
    return digest(fingerprint, engine_file)


def cpu_features() -> frozenset[str]:
    """The CPU's instruction sets as numpy's runtime dispatch reads them (cpuid on x86, so an emulated CPU shows
    its own, unlike /proc/cpuinfo under qemu-user; auxv on ARM), on any OS."""
    try:  # numpy's only record of them is this private table (numpy 2: _core, numpy 1: core)
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # pragma: no cover - numpy 1
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return frozenset()
    return frozenset(name for name, present in features.items() if present)


def int8_dot_product() -> bool:
    """Whether ONNX Runtime's u8 x s8 kernels are exact here: VNNI on x86-64, any aarch64 (NEON widens before it
    adds). Unknown CPUs count as without: the other kernels are slower but right everywhere."""
    features = cpu_features()
    return bool(features & {"AVX512VNNI", "AVXVNNI"}) or "ASIMD" in features


def cpu_summary() -> str:
    """The CPU as the int8 engine sees it, for logs and benchmarks: core count and the instruction sets that
    decide ONNX Runtime's int8 kernels."""
    shown = [f for f in ("AVX2", "AVX512F", "AVX512VNNI", "AVXVNNI", "AVX512_SPR", "ASIMD", "ASIMDDP")
             if f in cpu_features()]
    return f"{os.cpu_count()} cores, {' '.join(shown) or 'no AVX2/NEON'}"


class BatchReader:
    """ONNX Runtime's CalibrationDataReader protocol over a calibration's batches, in slices of ``rows`` images,
    with the ``len``/``set_range`` that strided calibration reads: ranges are then merged slice by slice
    (MinMax: the same ranges, the same engine) instead of the calibration graph running the whole sample at once.
    Peak RSS of the quantisation, 64 images at 224 px: 1.9 GB at once, 1.05 GB in slices of 8, 400 MB of 2."""

    def __init__(self, batches: Iterable[Batch], input_name: str, rows: int = CALIBRATION_ROWS) -> None:
        self.feeds = [feed for batch in batches for feed in slices(batch, input_name, rows)]
        self.position, self.end = 0, len(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.position, self.end = start_index, min(end_index, len(self.feeds))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= self.end:
            return None
        self.position += 1
        return self.feeds[self.position - 1]


def slices(batch: Batch, input_name: str, rows: int) -> list[dict[str, np.ndarray]]:
    if isinstance(batch, dict):
        return [batch]
    return [{input_name: np.ascontiguousarray(batch[i:i + rows])} for i in range(0, len(batch), rows)]


def weighted_layers(model: "onnx.ModelProto") -> list["onnx.NodeProto"]:  # noqa: F821
    """Convolutions, and MatMul / Gemm nodes with a weight (an initializer input), in graph order."""
    weights = {initializer.name for initializer in model.graph.initializer}
    return [node for node in model.graph.node
            if node.op_type == "Conv" or (node.op_type in LINEAR_OPS and weights & set(node.input))]


def leading_nodes(model: "onnx.ModelProto", convs: int = LEADING_FLOAT_CONVS) -> list[str]:  # noqa: F821
    """Names of the nodes up to the ``convs``-th weighted layer (graph order is topological) stay float, so the
    high-resolution layers keep their precision (a ViT: its patch convolution, first block, the next one's qkv)."""
    layers, names = weighted_layers(model), [node.name for node in model.graph.node]
    if len(layers) < convs:
        return names if layers else []
    return names[:names.index(layers[convs - 1].name) + 1]


def quantized_ops(model: "onnx.ModelProto") -> list[str] | None:  # noqa: F821
    """All that ONNX Runtime can (None) in a CNN's graph; the weighted ones where linear layers are (ViTs)."""
    linear = any(node.op_type in LINEAR_OPS for node in weighted_layers(model))
    return ["Conv", *LINEAR_OPS] if linear else None


def quantize_graph(fp32_path: Path, target: Path, calibration: Calibration, check: Callable[[Path], object],
                   recipe: Recipe) -> None:
    """Write the int8 graph of ``fp32_path`` made by ``recipe`` to ``target`` atomically; ``check(path)`` must
    accept the new graph before it is renamed into place (see :func:`check_close`). The quantiser's own errors
    propagate: they have no common type, the caller words them."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp.onnx")
    try:
        with quiet():
            recipe.quantize(fp32_path, tmp, calibration)
        check(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def static_qdq(fp32_path: Path, target: Path, calibration: Calibration) -> None:
    """The images' recipe (see the module's docstring), calibrated on ``calibration``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model, kernels = onnx.load(str(fp32_path)), STATIC_QDQ.kernels()
    reader = BatchReader(calibration.batches(), model.graph.input[0].name)
    quantize_static(str(fp32_path), str(target), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=kernels.reduce_range, activation_type=QuantType.QUInt8,
                    weight_type=QuantType[kernels.weight_type], calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=leading_nodes(model), op_types_to_quantize=quantized_ops(model),
                    extra_options={"CalibStridedMinMax": 1})


def first_layer_nodes(model: "onnx.ModelProto") -> list[str]:  # noqa: F821
    """Names of the first transformer layer's nodes (``.../layer.0/...`` in a transformers export): with them in
    float the probe's features were closest to fp32 for their cost (see the module's docstring). Empty when the
    graph names its layers otherwise: everything is then quantised."""
    return [node.name for node in model.graph.node if FIRST_LAYER in node.name]


def dynamic_per_channel(fp32_path: Path, target: Path, calibration: Calibration) -> None:
    """The text encoders' recipe: ranges are taken per batch at run time, so the sample is not read here."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    kernels = TEXT_DYNAMIC.kernels()
    quantize_dynamic(str(fp32_path), str(target), per_channel=True, reduce_range=kernels.reduce_range,
                     weight_type=QuantType[kernels.weight_type], op_types_to_quantize=["MatMul"],
                     nodes_to_exclude=first_layer_nodes(onnx.load(str(fp32_path))))


STATIC_QDQ = Recipe(RECIPE, INT8_TAG, static_qdq, "calibrating", "calibrate", min_items=MIN_CALIBRATION_ITEMS)
# bench/int8_text.py (all train + test texts, probe's four pooled layers): mean cosine distance to fp32 0.0030 on
# rt_polarity, 0.0026 on trec (max 0.010 / 0.005), against 0.0045 / 0.0037 when layer 0 and the Gathers were
# quantised too; broken recipes (per-tensor weights) reach 0.1 and more, so the 0.02 bound stays.
# Without VNNI it keeps s8 weights at 7 bits (the suite passed so on an AVX2 machine): its ranges are per batch.
TEXT_DYNAMIC = Recipe("dynamic-s8-perchannel-matmul-float1stlayer", "int8dyn2", dynamic_per_channel, "quantising",
                      "check", 0.02, Kernels("u8s8rr", "QInt8", reduce_range=True))


def check_sample_size(calibration: Calibration, recipe: Recipe, label: str, items: str) -> None:
    """Refuse a sample under ``recipe.min_items``: its engine would be the one every later run reuses."""
    if calibration.size < recipe.min_items:
        raise QuantizationError(f"{arg('engine', 'onnx-int8')} needs at least {recipe.min_items} training {items} "
                                f"to {recipe.needs} the engine every later run of {label} reuses (got "
                                f"{calibration.size}); train once on more, or use {arg('engine', 'onnx')}")


def check_close(engine: Callable[..., np.ndarray], reference: Callable[..., np.ndarray],
                calibration: Calibration, label: str, limit: float | None = None) -> float:
    """The mean cosine distance of ``engine``'s features to ``reference``'s on the calibration batches; an
    engine further off than ``limit`` (default MAX_MEAN_DISTANCE) is refused (an optimiser bug or a backbone the
    recipe does not suit), never cached."""
    limit = MAX_MEAN_DISTANCE if limit is None else limit
    distances = [cosine_distance(feed(reference, batch), feed(engine, batch)) for batch in calibration.batches()]
    mean = float(np.concatenate(distances).mean()) if distances else 0.0
    if mean > limit:
        raise QuantizationError(f"the int8 engine for {label or 'this backbone'} is too far from fp32 on the "
                                f"calibration sample (mean cosine distance {mean:.3f} > {limit:g}); use "
                                f"{arg('engine', 'onnx')}")
    return mean


def feed(engine: Callable[..., np.ndarray], batch: Batch) -> np.ndarray:
    """An engine's features for a batch: a text batch is its named inputs (``input_ids``, ``attention_mask``)."""
    return engine(**batch) if isinstance(batch, dict) else engine(batch)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise 1 - cosine similarity (features pooled to one vector per item)."""
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return 1.0 - (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the quantiser: it gives pages of advice through ``logging`` and ONNX Runtime's own log."""
    import logging

    import onnxruntime as ort

    logger, level = logging.getLogger(), logging.getLogger().level
    logger.setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        logger.setLevel(level)
        ort.set_default_logger_severity(2)


def items_per_second(engines: dict[str, Callable[..., np.ndarray]], calibration: Calibration,
                     rounds: int = 2) -> dict[str, float]:
    """Each engine's speed on the calibration batches, the best of ``rounds`` interleaved rounds (after one
    warm-up batch each), so load from other processes hits all alike."""
    batches = list(calibration.batches())
    items = sum(len(next(iter(b.values()))) if isinstance(b, dict) else len(b) for b in batches)
    best = dict.fromkeys(engines, 0.0)
    for name, engine in engines.items():
        feed(engine, batches[0])
    for _ in range(rounds):
        for name, engine in engines.items():
            start = time.perf_counter()
            for batch in batches:
                feed(engine, batch)
            best[name] = max(best[name], items / max(time.perf_counter() - start, 1e-9))
    return {name: round(rate, 1) for name, rate in best.items()}


def record_file(engine_path: Path) -> Path:
    """Beside an int8 engine: the kernels that built it and its speed against fp32 on each CPU it was timed on."""
    return engine_path.with_suffix(".json")


def record_speed(engine_path: Path, kernels: Kernels, rates: dict[str, float]) -> None:
    """Add this CPU's timing to the engine's record (a record that cannot be read or written is started anew or
    left alone: it only informs)."""
    record = read_record(engine_path)
    record.setdefault("kernels", kernels.tag)
    record.setdefault("speed", {})[cpu_summary()] = rates
    with contextlib.suppress(OSError):
        atomic_write_bytes(record_file(engine_path), json.dumps(record, indent=1).encode())


def read_record(engine_path: Path) -> dict:
    try:
        record = json.loads(record_file(engine_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and isinstance(record.get("speed", {}), dict) else {}


def say_if_slower(engine_path: Path, label: str, items: str) -> None:
    notice = slower_notice(engine_path, label, items)
    if notice:
        log(notice)


def slower_notice(engine_path: Path, label: str, items: str) -> str | None:
    """One line when the engine ran slower than fp32 on this CPU when it was timed: the user asked for speed."""
    rates = read_record(engine_path).get("speed", {}).get(cpu_summary())
    try:
        int8, fp32 = float(rates["int8"]), float(rates["fp32"])
    except (TypeError, KeyError, ValueError):
        return None
    if int8 >= fp32:
        return None
    return (f"notice: on this CPU ({cpu_summary()}) the int8 engine for {label or 'this backbone'} ran slower than "
            f"fp32 ({int8:.0f} vs {fp32:.0f} {items}/s on your calibration sample, timed once); "
            f"{arg('engine', 'onnx')} is faster here")
