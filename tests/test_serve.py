"""``transferkit serve``: the API through FastAPI's test client (predict, health, metadata, limits, batching),
property-based fuzzing of its request schema with hypothesis, and one real uvicorn process on loopback."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="serve needs the serve extra: pip install -e '.[serve,dev]'")
pytest.importorskip("hypothesis", reason="the fuzzing tests need the dev extra: pip install -e '.[serve,dev]'")

from conftest import make_folder  # noqa: E402 - after the checks above
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_text import sentiment_rows, write_csv

from transferkit import ImageClassifier, TextClassifier
from transferkit.serve.app import create_app
from transferkit.serve.limits import Limits

LIMITS = Limits(max_body_bytes=300_000, max_items=8, max_image_pixels=500_000)
FUZZ = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def png(colour: tuple[int, int, int] = (220, 40, 40), size: tuple[int, int] = (40, 40), mode: str = "RGB") -> bytes:
    image = Image.fromarray(np.full((size[1], size[0], 3), colour, np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def upload(*images: bytes) -> list:
    return [("files", (f"img{i}.png", data, "image/png")) for i, data in enumerate(images)]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Path:
    root = make_folder(tmp_path_factory.mktemp("images") / "data", {"train": 5, "val": 2})
    return ImageClassifier(image_size=32, cache_dir=str(session_cache)).fit(str(root)).save(root.parent / "run")


@pytest.fixture(scope="module")
def images(image_run: Path):
    with TestClient(create_app(image_run, LIMITS, max_batch=16, max_wait_ms=30)) as client:
        yield client


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory, session_cache: Path):
    folder = tmp_path_factory.mktemp("texts")
    data = write_csv(folder / "reviews.csv", sentiment_rows())
    run = TextClassifier(max_length=32, cache_dir=str(session_cache)).fit(str(data)).save(folder / "run")
    with TestClient(create_app(run, LIMITS)) as client:
        yield client


def check_answer(response, count: int, k: int, classes: list) -> None:
    """A 200 answer: one result per item, k labels each, most probable first, probabilities of a softmax."""
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == count
    for result in results:
        probabilities = [p["probability"] for p in result["predictions"]]
        assert len(probabilities) == k and probabilities == sorted(probabilities, reverse=True)
        assert all(0 <= p <= 1 for p in probabilities) and sum(probabilities) <= 1 + 1e-5
        assert {p["label"] for p in result["predictions"]} <= set(classes)


def test_images_predict_health_metadata_and_docs(images: TestClient) -> None:
    assert images.get("/health").json() == {"status": "ok"}
    meta = images.get("/metadata").json()
    assert meta["classes"] == ["blue", "red"] and meta["modality"] == "image"
    assert meta["backbone"] == "efficientnet_lite0" and meta["metrics"]["val"]["accuracy"] == 1.0
    assert meta["limits"]["max_items"] == 8 and meta["preprocessing"]["input_size"] == 32
    response = images.post("/predict?top_k=2", files=upload(png((220, 40, 40)), png((40, 60, 220))))
    check_answer(response, 2, 2, ["blue", "red"])
    assert [r["predictions"][0]["label"] for r in response.json()["results"]] == ["red", "blue"]
    assert response.json()["results"][0]["input"] == "img0.png"
    check_answer(images.post("/predict?top_k=9", files=upload(png())), 1, 2, ["blue", "red"])  # k <= classes
    schema = images.get("/openapi.json").json()
    assert "multipart/form-data" in schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert images.get("/docs").status_code == 200


def test_limits_are_answered_413_and_422(images: TestClient) -> None:
    def refused(status: int, response, words: str) -> None:
        assert response.status_code == status and words in response.json()["detail"], response.text

    refused(413, images.post("/predict", files=upload(b"\x00" * 400_000)), "over the limit of 300000 bytes")
    chunks = (b"x" * 50_000 for _ in range(10))  # no Content-Length: counted as it streams in
    refused(413, images.post("/predict", content=chunks, headers={"content-type": "multipart/form-data; boundary=b"}),
            "over the limit")
    refused(422, images.post("/predict", files=upload(png(size=(1000, 600)))), "1000x600 pixels is over the limit")
    refused(422, images.post("/predict", files=upload(png(size=(400, 4)))), "aspect ratio")
    refused(422, images.post("/predict", files=upload(b"GIF89a not really")), "not an image")
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(noise, "PNG")
    refused(422, images.post("/predict", files=upload(noise.getvalue()[:2000])), "files[0] ('img0.png'): cannot decode")
    refused(422, images.post("/predict", files=upload(*[png()] * 9)), "9 items, over the limit of 8")
    assert images.post("/predict?top_k=0", files=upload(png())).status_code == 422
    assert images.post("/predict", json={"texts": ["an image run"]}).status_code == 422
    assert images.get("/health").status_code == 200  # still serving


def test_concurrent_requests_share_engine_batches(images: TestClient) -> None:
    before = images.get("/metadata").json()["batching"]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: images.post("/predict", files=upload(png())), range(16)))
    assert all(a.status_code == 200 for a in answers)
    after = images.get("/metadata").json()["batching"]
    items, batches = after["items"] - before["items"], after["batches"] - before["batches"]
    assert items == 16 and batches < 16, after


@FUZZ
@given(files=st.lists(st.tuples(st.text(max_size=30), st.binary(max_size=3000)), min_size=0, max_size=10),
       top_k=st.one_of(st.integers(-5, 50), st.text(max_size=5)))
def test_fuzzed_uploads_never_crash_the_server(images: TestClient, files, top_k) -> None:
    parts = [("files", (name or "x", data, "application/octet-stream")) for name, data in files]
    response = images.post("/predict", params={"top_k": top_k}, files=parts or None,
                           data=None if parts else {"other": "field"})
    assert response.status_code in (200, 413, 422), response.text
    assert isinstance(response.json()["detail" if response.status_code != 200 else "results"], (list, str))


@FUZZ
@given(sizes=st.lists(st.tuples(st.integers(1, 300), st.integers(1, 300),
                                st.sampled_from(["RGB", "L", "RGBA", "P", "I;16", "1"])), min_size=1, max_size=8),
       top_k=st.integers(1, 4))
def test_fuzzed_valid_images_are_always_answered(images: TestClient, sizes, top_k) -> None:
    files = [png((i * 30 % 255, 80, 200), (w, h), mode) for i, (w, h, mode) in enumerate(sizes)]
    response = images.post("/predict", params={"top_k": top_k}, files=upload(*files))
    if any(max(w, h) / min(w, h) > 20 for w, h, _ in sizes):
        assert response.status_code == 422 and "aspect ratio" in response.json()["detail"]
    else:
        check_answer(response, len(sizes), min(top_k, 2), ["blue", "red"])


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


@FUZZ
@given(body=st.one_of(JSON, st.fixed_dictionaries({"texts": st.lists(st.text(max_size=200), max_size=12)}),
                      st.fixed_dictionaries({"texts": JSON})))
def test_fuzzed_text_bodies_are_answered_or_refused(texts: TestClient, body) -> None:
    response = texts.post("/predict", json=body)
    assert response.status_code in (200, 422), response.text
    valid = (isinstance(body, dict) and set(body) == {"texts"} and isinstance(body["texts"], list)
             and 1 <= len(body["texts"]) <= LIMITS.max_items and all(isinstance(t, str) for t in body["texts"]))
    assert (response.status_code == 200) == valid, (body, response.text)
    if valid:
        check_answer(response, len(body["texts"]), 1, ["neg", "pos"])


@FUZZ
@given(body=st.binary(max_size=500), content_type=st.sampled_from(["application/json", "application/octet-stream",
                                                                  "multipart/form-data; boundary=x", "text/plain"]))
def test_fuzzed_raw_bodies_to_the_text_api_are_answered(texts: TestClient, body: bytes, content_type: str) -> None:
    response = texts.post("/predict", content=body, headers={"content-type": content_type})
    assert response.status_code in (200, 400, 422), response.text  # 400: not UTF-8 where JSON was announced


def test_texts_predict_and_refusals(texts: TestClient) -> None:
    answer = texts.post("/predict?top_k=2", json={"texts": ["I loved this wonderful film", "boring and far too long"]})
    check_answer(answer, 2, 2, ["neg", "pos"])
    assert answer.json()["results"][0]["input"] == "I loved this wonderful film"
    lone = texts.post("/predict", content=b'{"texts": ["\\ud800 half a character"]}',
                      headers={"content-type": "application/json"})
    assert lone.status_code == 422 and "lone surrogate" in lone.json()["detail"]
    assert texts.post("/predict", files=upload(png())).status_code == 422
    assert texts.get("/metadata").json()["modality"] == "text"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_a_real_uvicorn_server_on_loopback(image_run: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "transferkit", "serve", str(image_run), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as reply:
                    assert json.load(reply) == {"status": "ok"}
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not come up in 60 s"
                time.sleep(0.3)
        body, content_type = multipart("red.png", png((220, 40, 40)))
        request = urllib.request.Request(f"{base}/predict?top_k=1", data=body, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert json.load(reply)["results"][0]["predictions"][0]["label"] == "red"
        with urllib.request.urlopen(f"{base}/openapi.json", timeout=10) as reply:
            assert "/predict" in json.load(reply)["paths"]
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[0]
    assert f"serving {image_run} on http://127.0.0.1:{port}" in output
