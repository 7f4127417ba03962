"""An image run's ``POST /predict``: uploads as multipart form field ``files`` (one or several), checked against
the server's limits from their headers before they are decoded, then decoded and cropped as the run's
preprocessing says."""

from __future__ import annotations

import io
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from PIL import Image

from transferkit.errors import shown
from transferkit.modalities.http import ERRORS, Budget, PredictResponse, Served, TopK, out_of_memory, too_many
from transferkit.modalities.image.images import ImageRefused, image_cost, load_rgb

class ImageRequests:
    """Images uploaded as multipart form field ``files`` (one or several)."""

    def __init__(self, service: Served, decoding: Budget) -> None:
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

    def register(self, app: FastAPI, batcher: Any) -> None:
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
