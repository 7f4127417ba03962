"""Feature-path benchmark (issue 5): transferkit against its peers, measured in one run on this machine.

    make bench            # or: .venv/bin/python bench/run.py [--skip-cifar] [--skip-peers]

Every contender runs as its own process, timed from the shell, so imports and start-up count.
Tables: first-run (fresh cache) peak memory; hymenoptera linear probe; Lite0@224 extraction throughput; CIFAR-10 linear probe (+ peak RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transferkit.features.quantize import cpu_summary

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("TRANSFERKIT_DATA", HERE.parents[1] / "shared" / "data"))
BIN = Path(sys.executable).parent


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str, int]:
    """Wall seconds, stdout, and peak RSS in MB of one child process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(process.pid, 0)  # reap it ourselves to read its own peak RSS
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"failed: {' '.join(command)}\n{err.read()[-2000:]}")
        return seconds, out.read(), usage.ru_maxrss // 1024


def save_results(results: dict, name: str) -> None:
    """Write ``results`` to bench/results/NAME (committed with ``git add -f``: the folder is ignored)."""
    out = HERE / "results" / name
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwritten: {out.relative_to(HERE.parent)}")


def transferkit(*args: str, cache: Path) -> list[str]:
    return [str(BIN / "transferkit"), "train", *args, "--cache-dir", str(cache), "--overwrite", "--json"]


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def warm_engine(cache: Path, work: Path) -> None:
    """Export Lite0@224 into ``cache`` by a run on other (generated) data: the engine is allowed to be cached."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import make_folder

    other = make_folder(work / "other", {"train": 4, "val": 2})
    subprocess.run(transferkit(str(other), "--out", str(work / "other-run"), cache=cache), check=True,
                   capture_output=True)


def hymenoptera(work: Path, skip_peers: bool) -> None:
    data = DATA / "hymenoptera_data"
    cache = work / "cache"
    warm_engine(cache, work)
    rows: list[tuple[str, float, float]] = []
    if not skip_peers:
        for label, peer in (("(a) PyTorch tutorial: frozen net + SGD head, 5 epochs", "tutorial"),
                            ("(b) eager timm features + sklearn LogisticRegression", "sklearn")):
            seconds, out, _ = timed([sys.executable, str(HERE / "peers.py"), peer, str(data)])
            rows.append((label, seconds, json.loads(out.strip().splitlines()[-1])["val_accuracy"]))
    for label in ("(c) transferkit, cold feature cache", "(d) transferkit, warm feature cache"):
        seconds, out, _ = timed(transferkit(str(data), "--out", str(work / "ants"), cache=cache))
        rows.append((label, seconds, json.loads(out)["val"]["accuracy"]))
    reference = next((s for label, s, _ in rows if label.startswith("(b)")), None)
    table("hymenoptera linear probe, EfficientNet-Lite0 @224, whole process from the shell",
          ["contender", "wall s", "val acc", "ratio to (b)"],
          [[label, f"{s:.1f}", f"{a:.3f}", f"{s / reference:.2f}" if reference else "-"] for label, s, a in rows])


def throughput() -> None:
    _, out, _ = timed([sys.executable, str(HERE / "throughput.py"), str(DATA / "hymenoptera_data"), "396"])
    rates = json.loads(out.strip().splitlines()[-1])
    n = int(rates.pop("images"))
    table(f"extraction throughput, EfficientNet-Lite0 @224, {n} hymenoptera JPEGs from files (img/s)",
          ["engine", "img/s"], [[k, f"{v:.0f}"] for k, v in rates.items()])


def cifar(work: Path) -> None:
    cache = work / "cache"
    seconds, out, rss = timed(transferkit(str(DATA / "cifar10"), "--out", str(work / "cifar"), cache=cache))
    metrics = json.loads(out)
    table("CIFAR-10 linear probe (10k train, 20% of it held out for L2 selection; 10k test), Lite0 at its "
          "native 224 px (32 px upsampled)",
          ["run", "wall s", "test acc", "peak RSS MB"],
          [["transferkit cold features (engine cached)", f"{seconds:.1f}", f"{metrics['test']['accuracy']:.3f}",
            str(rss)]])


# The probe in-process, printing its own peak RSS (children excluded) as its last stderr line.
OWN_PEAK = ("import atexit, resource, sys; atexit.register(lambda: print('own peak RSS KB', resource.getrusage("
            "resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)); from transferkit.cli import main; sys.argv[0] = "
            "'transferkit'; sys.exit(main())")


def time_v(args: list[str], cache: Path) -> tuple[float, int, int]:
    """Wall seconds, peak RSS in MB as ``/usr/bin/time -v`` reports it (the largest single process of the tree,
    so a child that exports or quantises counts), and the probe process's own peak in MB."""
    command = [sys.executable, "-c", OWN_PEAK, "train", *transferkit(*args, cache=cache)[2:]]
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-v", *command], stdout=subprocess.DEVNULL, stderr=err, text=True)
        seconds = time.perf_counter() - start
        err.seek(0)
        report = err.read()
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{report[-2000:]}")
    tree = next(line for line in report.splitlines() if "Maximum resident set size" in line)
    own = next(line for line in report.splitlines() if line.startswith("own peak RSS KB"))
    return seconds, int(tree.rsplit(":", 1)[1]) // 1024, int(own.split()[-1]) // 1024


def cold_memory(work: Path) -> None:
    """A first run of the backbone: the export (and for int8 the quantisation) is paid by the same probe, in
    child processes (features/child.py)."""
    data, rows = DATA / "hymenoptera_data", []
    for engine in ("onnx", "onnx-int8"):
        cache = work / f"cold-{engine}"  # fresh: nothing exported, quantised or extracted yet
        seconds, tree, own = time_v([str(data), "--engine", engine, "--out", str(work / f"cold-{engine}-run")], cache)
        _, warm, _ = time_v([str(data), "--engine", engine, "--out", str(work / f"warm-{engine}-run")], cache)
        rows.append([engine, f"{seconds:.1f}", str(tree), str(own), str(warm)])
    table("hymenoptera linear probe, Lite0 @224, first run of the backbone (fresh cache), peak RSS MB from "
          "/usr/bin/time -v (its largest process: the export or quantisation child) and the probe's own",
          ["engine", "cold wall s", "cold, time -v", "cold, probe's own", "warm, time -v"], rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-cifar", action="store_true")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--cold-only", action="store_true", help="only the first-run memory table")
    args = parser.parse_args()
    print(f"machine: {cpu_summary()}; data: {DATA}")
    work = Path(tempfile.mkdtemp(prefix="transferkit-bench-"))
    try:
        cold_memory(work)
        if args.cold_only:
            return
        hymenoptera(work, args.skip_peers)
        throughput()
        if not args.skip_cifar:
            cifar(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
