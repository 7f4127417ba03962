"""``transferkit auto`` against the issue's goals, side by side with ``transferkit train`` at its defaults and,
on image sets, fastai's ``fine_tune`` (bench/peer_fastai.py in bench/.venv-peers, which `make bench` builds), in
one run on this machine: per set, the budget, auto's wall time, its chosen configuration, validation and test
accuracy, the issue's goal, the best test figure bench/results holds for the set, and each peer's test accuracy
and wall time.

    python bench/auto.py [--budget 10m] [--sets hymenoptera,trec@5m,digits] [--fastai-epochs 2] [--out bench/results/auto.json]

hymenoptera is laid out as train/ + test/ (its val/ images are the test split), so auto holds its own
validation out of train; trec is train.csv with test.csv as test; digits is MNIST -> USPS with ``--target`` (its
own 20-minute budget, chosen by info-max: no target label read). Never chosen on test: see tests/test_auto.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"


def hymenoptera(work: Path) -> tuple[Path, list[str]]:
    root = work / "hymenoptera"
    if not root.exists():
        shutil.copytree(DATA / "hymenoptera_data" / "train", root / "train")
        shutil.copytree(DATA / "hymenoptera_data" / "val", root / "test")
    return root, []


def trec(work: Path) -> tuple[Path, list[str]]:
    return DATA / "trec" / "train.csv", ["--test-data", str(DATA / "trec" / "test.csv")]


def cifar10(work: Path) -> tuple[Path, list[str]]:
    """The shared 10k/10k: train/ + test/, auto holds its validation out of train."""
    return DATA / "cifar10", []


def rt_polarity(work: Path) -> tuple[Path, list[str]]:
    return DATA / "rt_polarity" / "train.csv", ["--test-data", str(DATA / "rt_polarity" / "test.csv")]


def digits(work: Path) -> tuple[Path, list[str]]:
    """MNIST (10,000 labelled) -> USPS: bench/adapt.py's fixed split of USPS, 1,000 unlabelled images as the
    target and the other 1,007 as the labelled test split; no other flag."""
    sys.path.insert(0, str(ROOT / "bench"))
    from adapt import splits

    folders = splits(work / "digits", 10_000)["mnist->usps"] if not (work / "digits").exists() else {
        "pool": work / "digits" / "mnist-to-usps" / "pool", "test": work / "digits" / "mnist-to-usps" / "test"}
    return DATA / "digits_mnist_usps" / "mnist", ["--target", str(folders["pool"]), "--test-data",
                                                  str(folders["test"])]


SETS = {"hymenoptera": hymenoptera, "trec": trec, "rt_polarity": rt_polarity, "digits": digits, "cifar10": cifar10}
GOALS = {"hymenoptera": 0.95, "trec": 0.94, "rt_polarity": 0.825, "digits": 0.95,
         "cifar10": 0.85}  # issue 24's test accuracy goals
BUDGETS = {"digits": "20m", "cifar10": "30m"}  # the goals: MNIST -> USPS within 20 minutes, CIFAR-10 at 30
# fastai's fine_tune(1) at its defaults (224 px: one frozen and one unfrozen epoch, each scored on the 10,000 test
# images) on 10,000 CIFAR images took 2095 s on 2 idle cores, already past auto's 30 minutes: fine_tune(2) would
# be about an hour
FASTAI_EPOCHS = {"cifar10": 1}
# train at its defaults fine-tunes MNIST at 224 px for 10 epochs (hours here) and never sees the target
NO_TRAIN_PEER = {"digits"}
FASTAI_PYTHON = ROOT / "bench" / ".venv-peers" / "bin" / "python"


def fastai_peer(data: Path, epochs: int) -> dict[str, Any] | None:
    """fastai ``fine_tune(epochs)`` on the same train/ folder, scored on test/ (its validation folder: fastai
    chooses nothing on it, it reports the last epoch); None where the peer's venv is not built."""
    if not FASTAI_PYTHON.exists() or not (data / "test").is_dir():
        return None
    start = time.perf_counter()
    done = subprocess.run([str(FASTAI_PYTHON), str(ROOT / "bench" / "peer_fastai.py"), str(data), str(epochs), "test"],
                          capture_output=True, text=True)
    if done.returncode:
        print(done.stderr[-2000:], file=sys.stderr)
        return {"error": done.stderr.strip().splitlines()[-1:]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"test": result["val_accuracy"], "wall_s": round(time.perf_counter() - start, 1), "epochs": epochs}


def run(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "transferkit", *args], env=env, capture_output=True, text=True)
    if done.returncode:
        print(done.stderr[-2000:], file=sys.stderr)
    return time.perf_counter() - start, done


def best_figure(name: str) -> dict[str, Any] | None:
    """The highest test accuracy any bench/results file records for the set (keys naming test, under the set)."""
    best: dict[str, Any] | None = None

    def walk(value: Any, path: str, file: str) -> None:
        nonlocal best
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}/{key}", file)
        elif isinstance(value, list):
            for i, inner in enumerate(value):
                walk(inner, f"{path}/{i}", file)
        elif isinstance(value, float) and 0 < value <= 1 and "test" in path.rsplit("/", 1)[-1].lower() \
                and (name in path.lower() or name in file) and "ci95" not in path and "std" not in path:
            if best is None or value > best["value"]:
                best = {"value": value, "file": file, "path": path}

    for file in sorted(RESULTS.glob("*.json")):
        if file.name == "auto.json":
            continue
        try:
            walk(json.loads(file.read_text()), "", file.name)
        except ValueError:
            continue
    return best


def one_set(name: str, budget: str, work: Path, fastai_epochs: int, peers_only: bool = False,
            peers: tuple[str, ...] = ("train", "fastai")) -> dict[str, Any]:
    """``name``: a set, or ``set@budget`` for a budget of its own (the sweep: ``hymenoptera@2m``);
    ``peers_only``: the peers alone (a set whose auto row another run of this script holds); ``peers``: which."""
    name, _, own = name.partition("@")
    data, extra = SETS[name](work)
    budget = own or BUDGETS.get(name, budget)
    row: dict[str, Any] = {"set": name, "budget": budget}
    if not peers_only:
        row.update(auto_row(name, budget, data, extra, work))
    if name in NO_TRAIN_PEER or "train" not in peers:
        return {**row, **fastai_row(name, data, fastai_epochs, peers)}
    peer_out = work / f"train-{name}"
    peer_wall, peer = run(["train", str(data), "--out", str(peer_out), "--overwrite",
                           "--cache-dir", str(work / f"cache-train-{name}"), *extra])
    if peer.returncode == 0:
        metrics = json.loads((peer_out / "metrics.json").read_text())
        row["peer_train_default"] = {"test": metrics.get("test", {}).get("accuracy"), "wall_s": round(peer_wall, 1)}
    return {**row, **fastai_row(name, data, fastai_epochs, peers)}


def fastai_row(name: str, data: Path, epochs: int, peers: tuple[str, ...]) -> dict[str, Any]:
    if not data.is_dir() or "fastai" not in peers or name in NO_TRAIN_PEER:
        return {}
    return {"peer_fastai": fastai_peer(data, FASTAI_EPOCHS.get(name, epochs))}


def auto_row(name: str, budget: str, data: Path, extra: list[str], work: Path) -> dict[str, Any]:
    out = work / f"auto-{name}-{budget}"
    # each command from a cold cache of its own: the budget covers extraction and the ONNX export too
    wall, done = run(["auto", str(data), "--budget", budget, "--out", str(out), "--overwrite", "--json",
                      "--cache-dir", str(work / f"cache-auto-{name}-{budget}"), *extra])
    row: dict[str, Any] = {"wall_s": round(wall, 1), "ok": done.returncode == 0}
    if done.returncode == 0:
        decisions = json.loads(done.stdout)
        metrics = json.loads((out / "metrics.json").read_text())
        row.update(chosen=decisions["winner"]["key"], val=metrics.get("val", {}).get("accuracy"),
                   test=metrics.get("test", {}).get("accuracy"),
                   trials=[(t["key"], t["state"], t["val"].get("accuracy"), t["val"].get("info-max"), t["seconds"])
                           for t in decisions["trials"]])
    row["goal"] = GOALS.get(name)
    row["best_in_bench_results"] = best_figure(name)
    return row


def offline_text_backbones() -> list[str]:
    """What auto could rank for text here (all-mpnet-base-v2 needs the `mpnet` extra)."""
    sys.path.insert(0, str(ROOT / "src"))
    from transferkit.modalities import TEXT
    from transferkit.selection.candidates import default_backbones
    return default_backbones(TEXT)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", default="10m")
    parser.add_argument("--sets", default="hymenoptera,trec")
    parser.add_argument("--fastai-epochs", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "auto.json"))
    parser.add_argument("--peers-only", action="store_true", help="the peers alone, no auto run")
    parser.add_argument("--peers", default="train,fastai", help="which peers run beside auto")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tk-bench-auto-") as work:
        for name in args.sets.split(","):
            rows.append(one_set(name, args.budget, Path(work), args.fastai_epochs, args.peers_only,
                                tuple(args.peers.split(","))))
            row = rows[-1]
            best = row.get("best_in_bench_results")
            print(f"{name:12} budget {row['budget']:>5}  wall {row.get('wall_s')} s  chosen {row.get('chosen')}  "
                  f"val {row.get('val')}  test {row.get('test')}  goal {row.get('goal')}  best in bench/results "
                  f"{None if best is None else round(best['value'], 4)}  train default "
                  f"{row.get('peer_train_default')}  fastai {row.get('peer_fastai')}", flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), []) if Path("/proc/cpuinfo").exists() else []
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
    Path(args.out).write_text(json.dumps({"cpu": cpu, "cores": os.cpu_count(), "cpu_flags": [f for f in wanted
                                          if f in flags], "load_at_end": os.getloadavg(), "rows": rows,
                                          "text_backbones_offline": offline_text_backbones()},
                                         indent=2) + "\n")


if __name__ == "__main__":
    main()
