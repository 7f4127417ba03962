"""A text run's ``POST /predict``: a JSON body ``{"texts": [...]}``, tokenized as the run's model reads them
within the server's memory budget."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from transferkit.modalities.http import ERRORS, Budget, PredictResponse, Served, TopK, out_of_memory, too_many
from transferkit.modalities.text.tokenizer import text_cost


class TextsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(min_length=1, description="Texts to classify", examples=[["a sentence to classify"]])


class TextRequests:
    """A JSON body ``{"texts": [...]}``."""

    def __init__(self, service: Served, decoding: Budget) -> None:
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

    def register(self, app: FastAPI, batcher: Any) -> None:
        service = self.service

        @app.post("/predict", response_model=PredictResponse, responses=ERRORS, summary="Classify texts")
        async def predict(body: TextsRequest, top_k: TopK = 1) -> PredictResponse:
            if len(body.texts) > self.limits.max_items:
                raise too_many("texts", len(body.texts), self.limits.max_items)
            ids = await run_in_threadpool(self.tokenize, body.texts)
            return service.response(body.texts, await batcher.submit(ids), top_k)
