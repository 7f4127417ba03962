import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_folder, make_image
from transferkit.modalities.image.backbones import resolve_backbone
from transferkit.features.cache import FeatureStore, cache_clear, cache_info
from transferkit.features.engines import OnnxEngine, TorchEngine, open_engine
from transferkit.modalities.image.features import FeatureSource, extract_features


@pytest.fixture(scope="module")
def source() -> FeatureSource:
    return FeatureSource.from_spec(resolve_backbone("efficientnet_lite0", input_size=64))


def files_of(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.png"))


def test_cache_miss_then_hit_then_only_new_files(tmp_path: Path, source: FeatureSource):
    root = make_folder(tmp_path / "d", {"": 3})
    files = files_of(root)
    first = extract_features(source, files, show_progress=False)
    assert (first.extracted, first.cached) == (6, 0)
    second = extract_features(source, files, show_progress=False)
    assert (second.extracted, second.cached) == (0, 6)
    np.testing.assert_array_equal(first.features, second.features)
    extra = make_image(root / "red" / "new.png", (200, 0, 0), seed=99)
    third = extract_features(source, files + [str(extra)], show_progress=False)
    assert (third.extracted, third.cached) == (1, 6)


def test_changed_file_is_extracted_again(tmp_path: Path, source: FeatureSource):
    path = make_image(tmp_path / "a.png", (10, 200, 10), seed=1)
    before = extract_features(source, [path], show_progress=False).features
    make_image(path, (200, 10, 200), seed=2)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000))
    after = extract_features(source, [path], show_progress=False)
    assert after.extracted == 1 and not np.allclose(before, after.features)


def test_float16_store_round_trips_close(tmp_path: Path):
    store = FeatureStore(tmp_path / "s", dtype="float16")
    values = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    store.put(["a", "b", "c", "d"], values)
    reopened = FeatureStore(tmp_path / "s")
    np.testing.assert_allclose(reopened.get(["c", "a"]), values[[2, 0]], atol=1e-2)
    assert np.load(next((tmp_path / "s").glob("*.npy"))).dtype == np.float16


def _writer(directory: str, worker: int) -> None:
    store = FeatureStore(Path(directory))
    for round_ in range(20):
        keys = [f"w{worker}-r{round_}-{i}" for i in range(5)]
        store.put(keys, np.full((5, 16), worker * 100 + round_, dtype=np.float32))


def test_concurrent_writers_do_not_corrupt(tmp_path: Path):
    context = mp.get_context("spawn")
    workers = [context.Process(target=_writer, args=(str(tmp_path / "s"), w)) for w in range(3)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    store = FeatureStore(tmp_path / "s")
    assert len(store) == 3 * 20 * 5
    assert store.get(["w2-r7-3"])[0, 0] == 207
    assert not list((tmp_path / "s").glob(".*tmp"))  # no leftovers


def test_onnx_and_torch_engines_agree(tmp_path: Path, source: FeatureSource):
    root = make_folder(tmp_path / "d", {"": 2})
    from transferkit.modalities.image.pipeline import decode_batches

    batch = next(decode_batches(files_of(root), source.preprocessing, batch_size=8))
    onnx = open_engine(source.fingerprint, 64, source.build_net, "onnx", label="t")
    torch_engine = open_engine(source.fingerprint, 64, source.build_net, "torch", label="t")
    assert isinstance(onnx, OnnxEngine) and isinstance(torch_engine, TorchEngine)
    difference = np.abs(onnx(batch.images) - torch_engine(batch.images)).max()
    assert difference < 1e-3, difference


def test_export_failure_falls_back_to_torch(tmp_path: Path, source: FeatureSource, monkeypatch, capsys):
    import transferkit.features.engines as engines

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator for this test")

    monkeypatch.setattr(engines, "export_onnx", broken)
    engine = open_engine("never-exported", 64, source.build_net, "onnx", cache_dir=tmp_path, label="t")
    assert isinstance(engine, TorchEngine)
    notice = capsys.readouterr().err
    assert "ONNX export failed" in notice and "unsupported operator" in notice


def test_cache_info_and_clear(tmp_path: Path, source: FeatureSource):
    root = make_folder(tmp_path / "d", {"": 1})
    extract_features(source, files_of(root), cache_dir=tmp_path / "c", show_progress=False)
    info = cache_info(tmp_path / "c")
    kinds = {e["kind"] for e in info["entries"]}
    assert "features" in kinds and info["bytes"] > 0
    assert cache_clear(tmp_path / "c", "features") > 0
    assert not [e for e in cache_info(tmp_path / "c")["entries"] if e["kind"] == "features"]


def test_extraction_in_slices_and_shards_keeps_each_files_row(tmp_path: Path, source: FeatureSource, monkeypatch):
    """Rows stream into one array and into cache shards as they come, and the engine runs slices of a batch:
    every file still gets its own row, in input order, around cached and undecodable ones."""
    from transferkit.features import engines
    from transferkit.modalities.image import features

    files = files_of(make_folder(tmp_path / "d", {"": 3}))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    whole = extract_features(source, files, use_cache=False, show_progress=False).features
    monkeypatch.setattr(features, "SHARD_ROWS", 2)
    monkeypatch.setattr(engines, "ENGINE_PIXELS", 64 * 64)  # one image per ONNX Runtime call
    cache = tmp_path / "cache"
    extract_features(source, files[:2], cache_dir=cache, show_progress=False)
    mixed = [files[1], str(broken), files[3], files[0], files[2], str(broken), files[5], files[4]]
    result = extract_features(source, mixed, cache_dir=cache, batch_size=3, show_progress=False)
    assert (result.cached, result.extracted, len(result.failed)) == (2, 4, 2)
    assert result.ok.tolist() == [True, False, True, True, True, False, True, True]
    np.testing.assert_allclose(result.features, whole[[1, 3, 0, 2, 5, 4]], atol=1e-4)
    assert len(list(cache.rglob("*.keys.json"))) == 3  # 2 rows, then a shard per decoded batch


def test_export_runs_in_a_child_process(tmp_path: Path, source: FeatureSource, monkeypatch, capsys):
    """The exporter's memory (torch, the tracer: 1.2 GB for Lite0 @224) is never the run's own."""
    import transferkit.features.engines as engines

    def recording(net, input_size, path):
        (tmp_path / "exporter.pid").write_text(str(os.getpid()))
        raise RuntimeError("unsupported operator for this test")

    monkeypatch.setattr(engines, "export_onnx", recording)
    monkeypatch.setattr("threading.active_count", lambda: 1)  # as in a command's process (other tests left threads)
    engine = open_engine("never-exported", 64, source.build_net, "onnx", cache_dir=tmp_path, label="t")
    assert isinstance(engine, TorchEngine) and "unsupported operator" in capsys.readouterr().err
    assert int((tmp_path / "exporter.pid").read_text()) != os.getpid()


CHILD_CHECKS = """
import os, signal, sys
from transferkit.errors import TransferkitError
from transferkit.features.child import ChildError, in_child
assert in_child(lambda: {"pid": os.getpid()})["pid"] != os.getpid()
try:
    in_child(lambda: (_ for _ in ()).throw(TransferkitError("too far from fp32")))
except TransferkitError as exc:
    assert "too far from fp32" in str(exc)
else:
    sys.exit("no error")
try:
    in_child(lambda: os.kill(os.getpid(), signal.SIGKILL))
except ChildError as exc:
    assert "signal 9, most likely out of memory" in str(exc), exc
else:
    sys.exit("no ChildError")
print("ok")
"""


def test_child_work_returns_its_result_or_raises_its_error():
    # a fresh process: this one has threads left by other tests, and then the work stays here (next test)
    done = subprocess.run([sys.executable, "-c", CHILD_CHECKS], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


SESSION_GARBAGE = """
import gc, time
import numpy as np, onnxruntime as ort
from onnx import TensorProto, helper
from transferkit.features.child import in_child
io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 64]) for n in "xy"]
weight = helper.make_tensor("w", TensorProto.FLOAT, [64, 64], np.ones(64 * 64, np.float32))
graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", io[:1], io[1:], [weight])
options = ort.SessionOptions()
options.intra_op_num_threads = 2
session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString(),
                               options, providers=["CPUExecutionProvider"])
session.run(None, {"x": np.ones((256, 64), np.float32)})
holder = {"session": session}
holder["self"] = holder  # a cycle: only the collector frees it
del session, holder
time.sleep(1)  # its pool's threads asleep on their condition
print(in_child(lambda: (gc.collect(), "ok")[1]))
"""


def test_a_session_left_to_the_collector_never_hangs_the_child():
    """An ONNX Runtime session collected in the child would wait for ever on its pool's threads (not copied by
    the fork): auto's export child hung so after training. The parent frees it; the child never sees it."""
    done = subprocess.run([sys.executable, "-c", SESSION_GARBAGE], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_child_work_stays_here_while_other_threads_run():
    """A lock another thread holds at the fork would stay locked in the child for ever: no fork then."""
    import threading

    from transferkit.features.child import in_child

    release = threading.Event()
    waiting = threading.Thread(target=release.wait, daemon=True)
    waiting.start()
    try:
        assert in_child(lambda: os.getpid()) == os.getpid()
    finally:
        release.set()
        waiting.join()