"""A bounded load test of ``transferkit serve`` on loopback: requests/s and p50/p99 latency for single images and
for batches of images, against a real uvicorn process.

    python bench/serve.py [--run RUN] [--requests 200] [--batch-requests 40] [--batch 8] [--concurrency 8]
                          [--seconds 60]

Without ``--run`` it trains a linear probe of EfficientNet-Lite0 (224 px) on small synthetic images first. Every
scenario stops at its request count or after ``--seconds``, whichever comes first; traffic goes to 127.0.0.1
only, and the server is stopped at the end. Prints a table and writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
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


def wait_up(port: int, server: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stdout.read()}")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path)
    parser.add_argument("--requests", type=int, default=200, help="single-image requests")
    parser.add_argument("--batch-requests", type=int, default=40, help="requests of --batch images")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit per scenario")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tk-bench-serve-") as scratch:
        run = args.run or make_run(Path(scratch))
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "transferkit", "serve", str(run), "--host", HOST,
                                   "--port", str(port), "--batch-size", "32"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_up(port, server)
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
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"concurrency": args.concurrency, **rows}, indent=1))


if __name__ == "__main__":
    main()
