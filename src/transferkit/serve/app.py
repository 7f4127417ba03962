"""The HTTP API of a run (FastAPI): ``POST /predict``, ``GET /health``, ``GET /metadata``, OpenAPI docs at
``/docs``. ``transferkit serve`` runs it with uvicorn, on loopback unless told otherwise."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from transferkit import __version__
from transferkit.serve.batching import MicroBatcher
from transferkit.serve.budget import MemoryBudget
from transferkit.serve.limits import BodyLimit, Limits
from transferkit.serve.service import Service


def create_app(run: str | Path, limits: Limits = Limits(), max_batch: int = 32, max_wait_ms: float = 5.0,
               cache_dir: str | Path | None = None) -> FastAPI:
    """The API of the run at ``run``: the run is loaded and its engine opened here, once.

    Items of concurrent requests are batched into one engine call: up to ``max_batch`` items, gathered for at
    most ``max_wait_ms`` after the first one arrives (the batching runs during the app's lifespan). The bodies
    of the requests in flight, and the decoding of their items, share the byte budgets of ``limits``."""
    service = Service(run, limits, cache_dir)
    bodies = MemoryBudget(limits.max_inflight_bytes, "this request's body", "serve --max-inflight-mb", wait=0)
    decoding = MemoryBudget(limits.decode_budget_bytes, "decoding", "serve --decode-budget-mb")
    batcher = MicroBatcher(service.predict, max_batch, max_wait_ms / 1000.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title=f"transferkit: {Path(run).name}", version=__version__, lifespan=lifespan,
                  description=f"{service.clf.modality.name} classifier of run `{run}` ({len(service.classes)} "
                              "classes). POST /predict answers the top_k labels of each item.")
    app.add_middleware(BodyLimit, limits=limits, bodies=bodies)
    app.state.service, app.state.batcher, app.state.budgets = service, batcher, {"bodies": bodies,
                                                                                 "decoding": decoding}

    @app.get("/health", summary="Whether the server is up")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata", summary="Classes, backbone, metrics, preprocessing and limits of the run")
    async def metadata() -> dict[str, Any]:
        return {**service.metadata(), "batching": {"max_batch": batcher.max_batch, "max_wait_ms": max_wait_ms,
                                                   "batches": batcher.batches, "items": batcher.items},
                "memory": {name: budget.to_dict() for name, budget in app.state.budgets.items()}}

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, server_error)
    service.inputs.requests(service, decoding).register(app, batcher)  # the run's modality makes POST /predict
    return app


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    """A failure of the server itself (a bug: uvicorn logs its traceback) still answers with a message."""
    return JSONResponse(status_code=500, content={"detail": f"internal error ({type(exc).__name__}); the server "
                                                            "logged it: please report it"})


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 answer, except that a body that is not text (an upload sent to a JSON endpoint) is shown by
    its size: FastAPI's own handler would fail decoding it and answer 500."""
    def shown(value: Any) -> Any:
        return f"<{len(value)} bytes>" if isinstance(value, (bytes, bytearray)) else value

    errors = [{**error, "input": shown(error.get("input"))} for error in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})
