"""Do two ``transferkit tune`` workers on one PostgreSQL study finish the search faster than one? (issue 27;
not run by the tests)

    .venv/bin/python bench/scale.py [--trials 40] [--image-size 128]

hymenoptera (``train/`` learned from, ``val/`` scoring the trials), probe trials on the packaged
EfficientNet-Lite0's cached features. A throw-away PostgreSQL server (tests/postgres.py: the Debian
``postgresql`` package's initdb and pg_ctl) holds the studies. The features are extracted once, before anything
is timed (a 1-trial study); then, in the same run, ``--trials`` trials by one worker (``transferkit tune`` as its
own process) in one study, and by two workers started together (the same command twice, each its own ``--out``)
in another. Each wall time runs from the first process's start to the last one's exit, the one final fit
included. Reports, per setting: finished trials in the study (goal: exactly ``--trials``), trial numbers run by
both workers (goal: none), final fits (goal: one), wall seconds, and the ratio of two workers' wall to one's
(goal <= 0.65). Writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from run import BIN, DATA, HERE, table

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()
    load = os.getloadavg()[0]  # other work on the machine: the ratio is fair on an idle one only
    data = DATA / "hymenoptera_data"
    extra = ["--image-size", str(args.image_size)]
    with tempfile.TemporaryDirectory(prefix="tk-scale-") as folder, postgres_server() as url:
        work = Path(folder)
        os.environ["TRANSFERKIT_CACHE"] = str(work / "cache")
        warm = workers(1, data, url, "warm", 1, work, extra)  # features extracted and cached: not timed below
        one = workers(1, data, url, "one", args.trials, work, extra)
        two = workers(2, data, url, "two", args.trials, work, extra)
    ratio = round(two["wall_s"] / one["wall_s"], 3)
    rows = [[f"{r['workers']} worker(s)", str(r["finished"]), "+".join(map(str, r["trials_per_worker"])),
             str(r["run_by_two"]), str(r["final_fits"]), f"{r['wall_s']:.1f}", f"{r['best_val_accuracy']:.4f}"]
            for r in (one, two)]
    table(f"tune on PostgreSQL, hymenoptera probe trials at {args.image_size}px, --trials {args.trials} "
          f"(load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end; {os.cpu_count()} CPUs)",
          ["setting", "finished", "trials run", "run by both", "final fits", "wall s", "best val acc"], rows)
    print(f"\nwall(2 workers) / wall(1 worker) = {ratio} (goal <= {GOAL}); password printed: "
          f"{one['password_printed'] or two['password_printed']}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"trials": args.trials, "image_size": args.image_size, "warm_s": warm["wall_s"],
                                   "one": one, "two": two, "ratio": ratio, "goal": GOAL,
                                   "load_average": {"start": load, "end": os.getloadavg()[0]}, "cpus": os.cpu_count()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
