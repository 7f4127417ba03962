"""``POST /predict`` per modality: image uploads (multipart) or a JSON list of texts, checked against the
limits, prepared as the run's model reads them, and batched into the engine. Each kind registers its own
route, so the OpenAPI schema says exactly what the run takes; the kind is chosen by the run's modality object."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Annotated

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from transferkit.errors import TransferkitError, shown
from transferkit.modalities import IMAGE, TEXT
from transferkit.modalities.image.images import ImageRefused, load_rgb
from transferkit.serve.budget import MemoryBudget, image_cost, text_cost
from transferkit.serve.service import PredictResponse, Service

if TYPE_CHECKING:
    from transferkit.serve.batching import MicroBatcher

TopK = Annotated[int, Query(ge=1, description="Labels per item, most probable first (at most the number of classes)")]
ERRORS = {413: {"description": "The request body is over the server's limit"},
          422: {"description": "An item cannot be used (not an image, too many pixels, too many items, ...)"},
          503: {"description": "The server's memory budget for requests in flight is full: retry after the "
                               "Retry-After header's seconds"}}


def out_of_memory(where: str) -> HTTPException:
    return HTTPException(503, f"{where}: the server ran out of memory; retry in a few seconds, or with fewer "
                              "items per request", headers={"Retry-After": "5"})


def too_many(what: str, count: int, limit: int) -> HTTPException:
    return HTTPException(422, f"{what}: {count} items, over the limit of {limit} per request (serve --max-items); "
                              "split the request")


class ImageRequests:
    """Images uploaded as multipart form field ``files`` (one or several)."""

    modality = IMAGE

    def __init__(self, service: Service, decoding: MemoryBudget) -> None:
        self.service, self.limits, self.decoding = service, service.limits, decoding
        self.preprocessing = service.clf.spec_.preprocessing

    def decode(self, data: bytes, where: str) -> np.ndarray:
        """One upload as the model's uint8 HWC input; a file that cannot be used is a 422 naming it, one that
        does not fit in the decoding budget now a 503."""
        try:
            with Image.open(io.BytesIO(data)) as header:  # the size and mode, from the header alone
                width, height = header.size
                cost = image_cost(width, height, header.mode, "transparency" in header.info)
        except Image.DecompressionBombError:
            raise HTTPException(422, f"{where}: too many pixels to decode; downscale the image") from None
        except Exception as exc:  # noqa: BLE001 - untrusted bytes: any parser failure means "not an image"
            raise HTTPException(422, f"{where}: not an image Pillow can read ({type(exc).__name__}); send a JPEG, "
                                     "PNG, WebP, BMP or TIFF file") from None
        if width * height > self.limits.max_image_pixels:
            raise HTTPException(422, f"{where}: {width}x{height} pixels is over the limit of "
                                     f"{self.limits.max_image_pixels} (serve --max-image-mp); downscale the image")
        try:
            with self.decoding.hold(cost, f"{where}: decoding {width}x{height} pixels"):
                image = load_rgb(io.BytesIO(data), draft_size=self.preprocessing.resize_size)  # type: ignore[arg-type]
                return self.preprocessing.resize_and_crop(image)
        except HTTPException:
            raise
        except MemoryError:
            raise out_of_memory(where) from None
        except ImageRefused as exc:
            raise HTTPException(422, f"{where}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a truncated or malformed file fails anywhere in the decoder
            raise HTTPException(422, f"{where}: cannot decode the image ({type(exc).__name__}: "
                                     f"{shown(str(exc), 80, quote=False)}); send the whole file") from None

    def decode_all(self, uploads: list[tuple[str, bytes]]) -> list[np.ndarray]:
        return [self.decode(data, where) for where, data in uploads]

    def register(self, app: FastAPI, batcher: "MicroBatcher") -> None:
        service = self.service

        @app.post("/predict", response_model=PredictResponse, responses=ERRORS, summary="Classify images")
        async def predict(files: Annotated[list[UploadFile], File(description="Image files (JPEG, PNG, ...)")],
                          top_k: TopK = 1) -> PredictResponse:
            if len(files) > self.limits.max_items:
                raise too_many("files", len(files), self.limits.max_items)
            names = [upload.filename or f"files[{i}]" for i, upload in enumerate(files)]
            uploads = [(f"files[{i}] ({shown(name, 60)})", await upload.read())
                       for i, (name, upload) in enumerate(zip(names, files))]
            images = await run_in_threadpool(self.decode_all, uploads)
            return service.response(names, await batcher.submit(images), top_k)


class TextsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(min_length=1, description="Texts to classify", examples=[["a sentence to classify"]])


class TextRequests:
    """A JSON body ``{"texts": [...]}``."""

    modality = TEXT

    def __init__(self, service: Service, decoding: MemoryBudget) -> None:
        self.service, self.limits, self.decoding = service, service.limits, decoding

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        for i, text in enumerate(texts):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise HTTPException(422, f"texts[{i}]: not valid Unicode (a lone surrogate such as \\ud800); send "
                                         "UTF-8 text") from None
        try:
            with self.decoding.hold(text_cost(texts), f"tokenizing {len(texts)} texts"):
                return self.service.inputs.tokenize(texts)
        except MemoryError:
            raise out_of_memory("texts") from None

    def register(self, app: FastAPI, batcher: "MicroBatcher") -> None:
        service = self.service

        @app.post("/predict", response_model=PredictResponse, responses=ERRORS, summary="Classify texts")
        async def predict(body: TextsRequest, top_k: TopK = 1) -> PredictResponse:
            if len(body.texts) > self.limits.max_items:
                raise too_many("texts", len(body.texts), self.limits.max_items)
            ids = await run_in_threadpool(self.tokenize, body.texts)
            return service.response(body.texts, await batcher.submit(ids), top_k)


REQUESTS = (ImageRequests, TextRequests)


def requests_for(service: Service, decoding: MemoryBudget) -> ImageRequests | TextRequests:
    """The request handling of the service's run, chosen by its modality object; its items are decoded
    within ``decoding``."""
    for kind in REQUESTS:
        if kind.modality is service.clf.modality:
            return kind(service, decoding)
    raise TransferkitError(f"serving {service.clf.modality.name} runs is not supported yet")
