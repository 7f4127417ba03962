"""A bounded load test of ``transferkit serve`` on loopback: requests/s and p50/p99 latency for single images and
for batches of images, against a real uvicorn process; then (``--mixed``) 200 concurrent mixed requests to an
image run's and a text run's server (texts of 10-2,000 words, images up to the pixel limit, bad bodies),
counting 2xx/4xx/503/5xx answers and the server's peak RSS.

    python bench/serve.py [--run RUN] [--requests 200] [--batch-requests 40] [--batch 8] [--concurrency 8]
                          [--seconds 60] [--mixed] [--mixed-only] [--clients 200] [--rounds 1] [--text-run RUN]

Without ``--run`` (``--text-run``) it trains a linear probe of EfficientNet-Lite0 (224 px) on small synthetic
images (of all-MiniLM-L6-v2 on 200 rt_polarity sentences) first. Every scenario stops at its request count or
after ``--seconds``, whichever comes first; traffic goes to 127.0.0.1 only, and the servers are stopped at the
end. Prints a table and writes bench/results/serve.json (``--mixed-only`` keeps its other rows).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

HOST = "127.0.0.1"  # loopback only
RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"


def photo(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A JPEG of a photo's size: smooth colour gradients plus noise (about 15 KB)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    base = np.stack([x * rng.uniform(0.2, 1), y * rng.uniform(0.2, 1), (x + y) * rng.uniform(0.1, 0.5)], -1)
    pixels = np.clip(base % 255 + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def multipart(images: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{i}.jpg\"\r\n"
             f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n" for i, data in enumerate(images)]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def make_run(folder: Path) -> Path:
    """A probe of the default backbone on 2 x 12 synthetic photos (the engine export is cached for next time)."""
    from transferkit import ImageClassifier  # lazy: only without --run

    for label, seed in (("warm", 0), ("cool", 1000)):
        (folder / "data" / label).mkdir(parents=True)
        for i in range(12):
            data = Image.open(io.BytesIO(photo(seed + i)))
            if label == "cool":
                data = Image.fromarray(np.asarray(data)[..., ::-1].copy())
            data.save(folder / "data" / label / f"{i}.jpg")
    clf = ImageClassifier(val_fraction=0.25)
    clf.verbose = False
    return clf.fit(str(folder / "data")).save(folder / "run")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def wait_up(port: int, server: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()}")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the server did not answer /health in {seconds:.0f} s")


def scenario(port: int, body: bytes, content_type: str, requests: int, concurrency: int,
             seconds: float) -> dict[str, float]:
    """``requests`` POST /predict from ``concurrency`` threads (one keep-alive connection each), stopping early
    after ``seconds``; latencies of the answered ones."""
    latencies: list[float] = []
    failures = [0]
    issued = iter(range(requests))
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=60)
        while time.monotonic() < stop_at:
            with lock:
                if next(issued, None) is None:
                    break
            start = time.perf_counter()
            connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            response.read()
            with lock:
                if response.status == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    failures[0] += 1
        connection.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(client) for _ in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {"requests": len(latencies), "failed": failures[0], "seconds": round(wall, 2),
            "req_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None}


# ------------------------------------------------------------------------------------------------------------
# --mixed: 200 concurrent requests of every kind, good and bad, at once
# ------------------------------------------------------------------------------------------------------------
# the shared data sets sit beside the project (../shared/data), or beside the folder of its worktrees
DATA = next((root / "shared" / "data" / "rt_polarity" / "train.csv" for root in Path(__file__).resolve().parents[2:4]
             if (root / "shared" / "data" / "rt_polarity").is_dir()), Path("../shared/data/rt_polarity/train.csv"))


def make_text_run(folder: Path) -> Path:
    """A probe of all-MiniLM-L6-v2 (128 tokens) on 200 rt_polarity sentences (packaged: offline)."""
    import csv

    from transferkit import TextClassifier  # lazy: only without --text-run

    with DATA.open(newline="") as source:
        rows = list(csv.reader(source))[1:]
    rows = rows[:100] + rows[-100:]  # the file is grouped by label
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "reviews.csv").open("w", newline="") as target:
        csv.writer(target).writerows([("text", "label"), *rows])
    clf = TextClassifier()
    clf.verbose = False
    return clf.fit(str(folder / "reviews.csv")).save(folder / "text-run")


def png(size: tuple[int, int], noise: bool = False, seed: int = 0) -> bytes:
    """A PNG of ``size``: flat colour (a 6000x6000 one is 35 kB and decodes to 108 MB) or noise."""
    if noise:
        pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
    else:
        image = Image.new("RGB", size, (seed * 37 % 255, 90, 160))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class Traffic:
    """The request bodies of the mixed run: (label, method, path, body, headers) for request ``i``."""

    def __init__(self, max_mp: float = 40.0) -> None:
        side = int((max_mp * 1e6) ** 0.5) - 100  # just under the default pixel limit
        big, over = png((side, side)), png((side + 400, side + 400))
        good = multipart([photo(1)]), multipart([big]), multipart([png((2000, 1500), noise=True)]), \
            multipart([photo(2), photo(3), big])
        truncated = multipart([png((64, 64), noise=True)[:500]])
        bad = multipart([over]), multipart([b"not an image at all"]), truncated, \
            (b'{"texts": ["an image run"]}', "application/json"), (b"--x\r\nbroken", "multipart/form-data; boundary=x")
        self.images = [("image", *body) for body in good * 2] + [("bad image", *body) for body in bad]
        with DATA.open() as source:
            self.words = source.read().replace(",negative", "").replace(",positive", "").split()

    def image(self, i: int) -> tuple[str, bytes, str]:
        return self.images[i % len(self.images)]

    def text(self, i: int) -> tuple[str, bytes, str]:
        rng = np.random.default_rng(i)
        kind = i % 10
        if kind >= 7:  # bad bodies: not JSON, not a list of texts, too many texts, a lone surrogate
            body = [b"{not json", b'{"texts": [1, 2]}', b'{"texts": ["' + b"x" * 10 + b'"], "extra": 1}'][kind - 7]
            return "bad text", body, "application/json"
        texts = [" ".join(rng.choice(self.words, int(rng.integers(10, 2001)))) for _ in range(int(rng.integers(1, 5)))]
        return "text", json.dumps({"texts": texts}).encode(), "application/json"


def rss_mb(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (the peak so far) of a process, in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def mixed(port: int, pid: int, bodies, clients: int, rounds: int, seconds: float) -> dict[str, object]:
    """``clients`` threads released at once, each sending ``rounds`` requests (new connection each); answers
    counted by class, non-2xx answers without a JSON ``detail`` counted apart."""
    counts = {"2xx": 0, "4xx": 0, "503": 0, "5xx": 0, "no_detail": 0, "connection_errors": 0}
    examples: dict[str, str] = {}
    lock, start = threading.Lock(), threading.Barrier(clients)
    stop_at = time.monotonic() + seconds
    rss_before = rss_mb(pid, "VmRSS")

    def client(index: int) -> None:
        start.wait()
        for r in range(rounds):
            if time.monotonic() > stop_at:
                return
            label, body, content_type = bodies(index * rounds + r)
            try:
                connection = http.client.HTTPConnection(HOST, port, timeout=max(10.0, seconds))
                connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
                response = connection.getresponse()
                status, payload = response.status, response.read()
                connection.close()
            except OSError as exc:
                with lock:
                    counts["connection_errors"] += 1
                    examples.setdefault("connection error", f"{label}: {exc!r}")
                continue
            key = "2xx" if status < 300 else "503" if status == 503 else "4xx" if status < 500 else "5xx"
            try:
                detail = status < 300 or bool(json.loads(payload).get("detail"))
            except (ValueError, AttributeError):
                detail = False
            with lock:
                counts[key] += 1
                counts["no_detail"] += not detail
                if key != "2xx":
                    examples.setdefault(f"{status} {label}", payload.decode(errors="replace")[:160])

    begun = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client, i) for i in range(clients)]:
            future.result()
    return {**counts, "seconds": round(time.perf_counter() - begun, 1), "rss_before_mb": rss_before,
            "peak_rss_mb": rss_mb(pid, "VmHWM"), "examples": examples}


def start_server(run: Path, log: Path) -> tuple[subprocess.Popen, int]:
    """A server on a free loopback port; its output goes to ``log`` (a pipe nobody reads would fill and stall
    it)."""
    port = free_port()
    with log.open("w") as output:
        server = subprocess.Popen([sys.executable, "-m", "transferkit", "serve", str(run), "--host", HOST,
                                   "--port", str(port), "--batch-size", "32"], stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_up(port, server, log)
    except BaseException:
        server.terminate()
        raise
    return server, port


def run_mixed(args: argparse.Namespace, image_run: Path, scratch: Path) -> dict[str, dict]:
    traffic, rows = Traffic(), {}
    text_run = args.text_run or make_text_run(scratch / "text")
    for name, run, bodies in (("mixed, image run", image_run, traffic.image), ("mixed, text run", text_run,
                                                                                traffic.text)):
        server, port = start_server(run, scratch / f"{len(rows)}.log")
        try:
            scenario(port, *multipart([photo(7)]) if bodies == traffic.image else
                     (json.dumps({"texts": ["warm up"]}).encode(), "application/json"), 4, 2, args.seconds)
            rows[name] = mixed(port, server.pid, bodies, args.clients, args.rounds, args.seconds)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path)
    parser.add_argument("--requests", type=int, default=200, help="single-image requests")
    parser.add_argument("--batch-requests", type=int, default=40, help="requests of --batch images")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit per scenario")
    parser.add_argument("--mixed", action="store_true", help="also the concurrent mixed-request run")
    parser.add_argument("--mixed-only", action="store_true", help="only the mixed run (keeps the other results)")
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients of the mixed run")
    parser.add_argument("--rounds", type=int, default=1, help="requests per client in the mixed run")
    parser.add_argument("--text-run", type=Path)
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if args.mixed_only and RESULTS.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="tk-bench-serve-") as scratch:
        run = args.run or make_run(Path(scratch))
        if not args.mixed_only:
            results = {"concurrency": args.concurrency, **throughput(args, run, Path(scratch) / "server.log")}
        if args.mixed or args.mixed_only:
            load = os.getloadavg()[0]  # the machine's other work when the run began (shared CPUs)
            mixed_rows = run_mixed(args, run, Path(scratch))
            print(f"{args.clients} concurrent mixed requests x {args.rounds} on loopback ({os.cpu_count()} CPUs, load "
                  f"average {load:.1f} at the start)")
            print(f"{'server':<18}{'2xx':>6}{'4xx':>6}{'503':>6}{'5xx':>6}{'no detail':>10}{'conn err':>9}"
                  f"{'s':>7}{'RSS before':>11}{'peak RSS':>10}")
            for name, row in mixed_rows.items():
                print(f"{name:<18}{row['2xx']:>6}{row['4xx']:>6}{row['503']:>6}{row['5xx']:>6}{row['no_detail']:>10}"
                      f"{row['connection_errors']:>9}{row['seconds']:>7}{row['rss_before_mb']:>11}"
                      f"{row['peak_rss_mb']:>10}")
                for what, example in row["examples"].items():
                    print(f"  {what}: {example}")
            results["mixed"] = {"clients": args.clients, "rounds": args.rounds, "cpus": os.cpu_count(),
                                "cpu": cpu_name(), "load_average": round(load, 1), **mixed_rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def throughput(args: argparse.Namespace, run: Path, log: Path) -> dict[str, dict]:
    server, port = start_server(run, log)
    try:
        single, batch = multipart([photo(7)]), multipart([photo(100 + i) for i in range(args.batch)])
        scenario(port, *single, 10, 2, args.seconds)  # warm-up: sessions, thread pools, allocator
        rows = {"single image": scenario(port, *single, args.requests, args.concurrency, args.seconds),
                f"batch of {args.batch}": scenario(port, *batch, args.batch_requests, args.concurrency,
                                                   args.seconds)}
    finally:
        server.terminate()
        server.wait(timeout=30)
    rows[f"batch of {args.batch}"]["images_per_s"] = round(rows[f"batch of {args.batch}"]["req_per_s"] * args.batch, 1)
    rows["single image"]["images_per_s"] = rows["single image"]["req_per_s"]
    run_name = args.run or "efficientnet_lite0 probe, 224 px"
    print(f"transferkit serve on loopback, {args.concurrency} concurrent clients, run {run_name}")
    print(f"{'scenario':<16}{'requests':>9}{'failed':>7}{'req/s':>8}{'img/s':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for name, row in rows.items():
        print(f"{name:<16}{row['requests']:>9}{row['failed']:>7}{row['req_per_s']:>8}{row['images_per_s']:>8}"
              f"{row['p50_ms']:>9}{row['p99_ms']:>9}")
    return rows


if __name__ == "__main__":
    main()
