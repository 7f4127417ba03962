"""``POST /predict``: each modality's inputs say how a request carries its items (image uploads, a JSON list of
texts, ...) and register that route (``Modality.inputs(clf).requests``), so the OpenAPI schema says exactly what
the run takes. Here: what every route shares (its error answers, ``top_k``, the limits' refusals)."""

from __future__ import annotations

from typing import Annotated, Any, Protocol, Sequence

import numpy as np
from fastapi import FastAPI, HTTPException, Query

from transferkit.serve.budget import MemoryBudget
from transferkit.serve.limits import Limits
from transferkit.serve.schema import PredictResponse

TopK = Annotated[int, Query(ge=1, description="Labels per item, most probable first (at most the number of classes)")]
ERRORS = {413: {"description": "The request body is over the server's limit"},
          422: {"description": "An item cannot be used (not an image, too many pixels, too many items, ...)"},
          503: {"description": "The server's memory budget for requests in flight is full: retry after the "
                               "Retry-After header's seconds"}}


class Served(Protocol):
    """What a route needs of the service (serve/service.py) behind it."""

    limits: Limits
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


def requests_for(service: Served, decoding: MemoryBudget) -> Requests:
    """The request handling of the service's run, as its modality's inputs make it; its items are prepared
    within ``decoding``."""
    return service.inputs.requests(service, decoding)
