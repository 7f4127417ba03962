"""What every modality's ``POST /predict`` shares (its parser: ``ModelInputs.requests``): the answer's schema,
the error answers, ``top_k``, the limits' refusals, and what a parser asks of the server behind it. FastAPI and
pydantic only, so a modality's parser never imports serve/ (which builds on this)."""

from __future__ import annotations

from typing import Annotated, Any, ContextManager, Protocol, Sequence, Union

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

Label = Union[str, int, float, bool]  # a class as classes.json holds it (the user's own int labels stay ints)


class Prediction(BaseModel):
    label: Label
    probability: float = Field(ge=0.0, le=1.0)


class Result(BaseModel):
    input: str = Field(description="The uploaded file's name, or the text")
    predictions: list[Prediction] = Field(description="The top_k labels, most probable first")


class PredictResponse(BaseModel):
    results: list[Result] = Field(description="One per image or text, in request order")


TopK = Annotated[int, Query(ge=1, description="Labels per item, most probable first (at most the number of classes)")]
ERRORS = {413: {"description": "The request body is over the server's limit"},
          422: {"description": "An item cannot be used (not an image, too many pixels, too many items, ...)"},
          503: {"description": "The server's memory budget for requests in flight is full: retry after the "
                               "Retry-After header's seconds"}}


class Budget(Protocol):
    """The server's memory budget for preparing items (serve/budget.py: MemoryBudget)."""

    def hold(self, size: int, what: str) -> ContextManager[None]: ...


class Served(Protocol):
    """What a parser needs of the service (serve/service.py) behind it."""

    limits: Any  # serve/limits.py: Limits (max_items, max_image_pixels, ...)
    inputs: Any  # the run's ModelInputs (modalities/base.py)
    clf: Any

    def response(self, names: Sequence[str], rows: np.ndarray, top_k: int) -> PredictResponse: ...


class Requests(Protocol):
    """One modality's ``POST /predict``."""

    def register(self, app: FastAPI, batcher: Any) -> None:
        """Add the route; its handler prepares the request's items and awaits ``batcher.submit(items)``."""


def out_of_memory(where: str) -> HTTPException:
    return HTTPException(503, f"{where}: the server ran out of memory; retry in a few seconds, or with fewer "
                              "items per request", headers={"Retry-After": "5"})


def too_many(what: str, count: int, limit: int) -> HTTPException:
    return HTTPException(422, f"{what}: {count} items, over the limit of {limit} per request (serve --max-items); "
                              "split the request")
