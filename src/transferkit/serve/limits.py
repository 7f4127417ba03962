"""What a server accepts: request body size, items per request, image dimensions, and the memory all requests
in flight may take; and the ASGI middleware that answers an oversized body with 413 before it is read (uvicorn
itself sets no limit) and a body past the in-flight budget with 503."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Callable, MutableMapping

from fastapi import HTTPException

from transferkit.serve.budget import MemoryBudget

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """Per request: body bytes, items (images or texts), and pixels of one image (width x height, read from its
    header before it is decoded); top_k is at most the number of classes. Across the requests in flight: the
    bytes of their bodies, and the working memory of decoding their items (see ``serve.budget``)."""

    max_body_bytes: int = 16_000_000
    max_items: int = 64
    max_image_pixels: int = 40_000_000
    max_inflight_bytes: int = 256_000_000
    decode_budget_bytes: int = 512_000_000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def too_large(self, size: int) -> str:
        return (f"request body of {size} bytes is over the limit of {self.max_body_bytes} bytes (serve "
                "--max-body-mb); send fewer or smaller items per request")


class BodyLimit:
    """413 for a body over ``limits.max_body_bytes``; 503 (``Retry-After``) for one that does not fit in
    ``bodies``, the budget of body bytes held by all requests in flight. Both at once from a Content-Length, or
    while a chunked body streams in (raised as an HTTPException where the endpoint reads the body); a request
    holds its share until its response is sent."""

    def __init__(self, app: ASGIApp, limits: Limits, bodies: MemoryBudget) -> None:
        self.app, self.limits, self.bodies = app, limits, bodies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        size = int(declared) if declared is not None and declared.isdigit() else None
        if size is not None and size > self.limits.max_body_bytes:
            await refuse(send, 413, self.limits.too_large(size))
            return
        held = 0
        if size:  # the event loop never waits for room: a full budget is answered at once
            try:
                self.bodies.take(size, wait=0)
            except HTTPException as busy:
                await discard_body(receive)  # answering before it is read resets a client still sending it
                await refuse(send, 503, busy.detail, busy.headers)
                return
            held = size
        received = 0

        async def limited() -> Message:
            nonlocal received, held
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limits.max_body_bytes:
                    raise HTTPException(413, self.limits.too_large(received))
                if received > held:  # a chunked body (or one longer than it said) claims as it comes
                    self.bodies.take(received - held, wait=0)
                    held = received
            return message

        try:
            await self.app(scope, limited, send)
        finally:
            self.bodies.give(held)


async def discard_body(receive: Receive) -> None:
    """Read a request's body (under the size limit) chunk by chunk, keeping none of it."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def refuse(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """A JSON error response, as FastAPI writes its own (``{"detail": ...}``)."""
    body = json.dumps({"detail": detail}).encode()
    extra = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": body})
