"""Do two ``transferkit tune`` workers on one PostgreSQL study finish the search faster than one, and do two
ranks of ``torchrun`` extract the same features as one process? (issue 27; not run by the tests)

    .venv/bin/python bench/scale.py [--trials 200] [--image-size 128] [--skip-tune] [--skip-extraction]

hymenoptera (``train/`` learned from, ``val/`` scoring the trials), probe trials on the packaged
EfficientNet-Lite0's cached features. A throw-away PostgreSQL server (tests/postgres.py: the Debian
``postgresql`` package's initdb and pg_ctl) holds the studies. The features are extracted once, before anything
is timed (a 1-trial study); then, in the same run, ``--trials`` trials by one worker (``transferkit tune`` as its
own process) in one study, and by two workers started together (the same command twice, each its own ``--out``)
in another. Each wall time runs from the first process's start to the last one's exit, the one final fit
included. Reports, per setting: finished trials in the study (goal: exactly ``--trials``), trial numbers run by
both workers (goal: none), final fits (goal: one), wall seconds, and the ratio of two workers' wall to one's
(goal <= 0.65).

Extraction: ``transferkit train DATA`` (a probe, ``--extract-image-size``) as one process and as two ranks
(``python -m torch.distributed.run --nproc_per_node 2 --standalone``), each from a cold feature cache with the
ONNX engine already exported (a first run exports it; it is copied into each cache). Reports each wall time
(process start included), the extraction's own seconds (rank 0's, the barrier included), and whether the two
caches hold the same features, bit for bit (the goal). Writes bench/results/scale.json (a part not measured in
this run keeps its previous figures).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from run import BIN, DATA, HERE, table, timed

from transferkit.features.cache import FeatureStore

sys.path.insert(0, str(HERE.parent / "tests"))
from postgres import postgres_server  # noqa: E402 - the tests' server, one helper for both

RESULTS = HERE / "results" / "scale.json"
GOAL = 0.65


def workers(count: int, data: Path, url: str, study: str, trials: int, work: Path, extra: list[str]) -> dict[str, Any]:
    """``count`` tune processes on one study, started together: wall seconds and what they did."""
    commands = [[str(BIN / "transferkit"), "tune", str(data), "--storage", url, "--study", study, "--trials",
                 str(trials), "--out", str(work / f"{study}-{i}"), "--json", *extra] for i in range(count)]
    start = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "CI": "1"}) for c in commands]
    outputs = [p.communicate() for p in procs]
    wall = time.perf_counter() - start
    for proc, (_, err) in zip(procs, outputs):
        if proc.returncode:
            raise SystemExit(f"a worker failed:\n{err[-2000:]}")
    password = re.match(r"postgresql://[^:]+:([^@]+)@", url).group(1)
    ran = [set(re.findall(r"^trial (\d+): (?:val accuracy|pruned)", err, re.M)) for _, err in outputs]
    summary = json.loads(outputs[0][0])
    return {"workers": count, "wall_s": round(wall, 2), "finished": summary["finished"],
            "trials_per_worker": [len(r) for r in ran],
            "run_by_two": len(set.intersection(*ran)) if count > 1 else 0,
            "final_fits": sum((work / f"{study}-{i}" / "metrics.json").is_file() for i in range(count)),
            "best_val_accuracy": summary["best"]["value"], "seconds_per_trial": summary["seconds_per_trial"],
            "password_printed": any(password in out + err for out, err in outputs)}


def cached_features(cache: Path) -> dict[str, np.ndarray]:
    """Every row of the one features entry in ``cache``, by key."""
    [entry] = (cache / "features").iterdir()
    store = FeatureStore(entry)
    keys = sorted(store.keys())
    return dict(zip(keys, store.get(keys)))


def extraction(data: Path, size: int, work: Path) -> dict[str, Any]:
    """A probe ``train`` by one process and by two torchrun ranks, each from a cold feature cache (the engine
    exported before): wall and extraction seconds, and whether the features are the same bits."""
    command = ["-m", "transferkit", "train", str(data), "--image-size", str(size), "--json"]
    timed([sys.executable, *command, "--cache-dir", str(work / "warm"), "--out", str(work / "warm-run")])
    launchers = {1: [sys.executable], 2: [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                          "--standalone"]}
    result: dict[str, Any] = {"data": data.name, "image_size": size, "load_average_start": os.getloadavg()[0]}
    for ranks, launcher in launchers.items():
        cache = work / f"cache-{ranks}"
        shutil.copytree(work / "warm" / "engines", cache / "engines")
        wall, out, _ = timed([*launcher, *command, "--cache-dir", str(cache), "--out", str(work / f"run-{ranks}")])
        metrics = json.loads(out[out.index("{"):])
        result[str(ranks)] = {"wall_s": round(wall, 2), "extraction_s": metrics["embeddings"]["seconds"],
                              "items": metrics["embeddings"]["extracted"], "val": metrics["val"]["accuracy"]}
    one, two = cached_features(work / "cache-1"), cached_features(work / "cache-2")
    result["identical"] = one.keys() == two.keys() and all(np.array_equal(one[k], two[k]) for k in one)
    result["load_average_end"] = os.getloadavg()[0]
    return result


def report_extraction(result: dict[str, Any]) -> None:
    rows = [[f"{ranks} {'process' if ranks == '1' else 'ranks (torchrun)'}", str(r["items"]), f"{r['wall_s']:.1f}",
             f"{r['extraction_s']:.1f}", f"{r['val']:.4f}"]
            for ranks, r in ((k, result[k]) for k in ("1", "2"))]
    table(f"train (probe) extraction, {result['data']} at {result['image_size']}px, cold feature cache "
          f"(load average {result['load_average_start']:.1f} at start, {result['load_average_end']:.1f} at end; "
          f"{os.cpu_count()} CPUs)", ["setting", "items", "wall s", "extraction s", "val acc"], rows)
    print(f"\nfeatures of 2 ranks identical to 1 process's (bit for bit): {'yes' if result['identical'] else 'NO'}")


def tune(args: argparse.Namespace) -> dict[str, Any]:
    load = os.getloadavg()[0]  # other work on the machine: the ratio is fair on an idle one only
    data = DATA / "hymenoptera_data"
    extra = ["--image-size", str(args.image_size)]
    with tempfile.TemporaryDirectory(prefix="tk-scale-") as folder, postgres_server() as url:
        work = Path(folder)
        os.environ["TRANSFERKIT_CACHE"] = str(work / "cache")
        warm = workers(1, data, url, "warm", 1, work, extra)  # features extracted and cached: not timed below
        one = workers(1, data, url, "one", args.trials, work, extra)
        two = workers(2, data, url, "two", args.trials, work, extra)
        del os.environ["TRANSFERKIT_CACHE"]
    ratio = round(two["wall_s"] / one["wall_s"], 3)
    rows = [[f"{r['workers']} worker(s)", str(r["finished"]), "+".join(map(str, r["trials_per_worker"])),
             str(r["run_by_two"]), str(r["final_fits"]), f"{r['wall_s']:.1f}", f"{r['best_val_accuracy']:.4f}"]
            for r in (one, two)]
    table(f"tune on PostgreSQL, hymenoptera probe trials at {args.image_size}px, --trials {args.trials} "
          f"(load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end; {os.cpu_count()} CPUs)",
          ["setting", "finished", "trials run", "run by both", "final fits", "wall s", "best val acc"], rows)
    print(f"\nwall(2 workers) / wall(1 worker) = {ratio} (goal <= {GOAL}); password printed: "
          f"{one['password_printed'] or two['password_printed']}")
    return {"trials": args.trials, "image_size": args.image_size, "warm_s": warm["wall_s"], "one": one, "two": two,
            "ratio": ratio, "goal": GOAL, "load_average": {"start": load, "end": os.getloadavg()[0]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # a probe trial takes ~0.1 s: at 40 the workers' start and the one final fit are most of the wall time (ratio
    # 0.84 on 2 idle cores), at 200 the search itself is (0.56)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--extract-data", default="hymenoptera_data", help="a folder of the shared data")
    parser.add_argument("--extract-image-size", type=int, default=224)
    parser.add_argument("--skip-tune", action="store_true")
    parser.add_argument("--skip-extraction", action="store_true")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results["cpus"] = os.cpu_count()
    if not args.skip_tune:
        results.update(tune(args))
    if not args.skip_extraction:
        with tempfile.TemporaryDirectory(prefix="tk-extract-") as folder:
            results["extraction"] = extraction(DATA / args.extract_data, args.extract_image_size, Path(folder))
        report_extraction(results["extraction"])
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
