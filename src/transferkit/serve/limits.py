"""What a server accepts: request body size, items per request, image dimensions; and the ASGI middleware that
answers an oversized body with 413 before it is read (uvicorn itself sets no limit)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Callable, MutableMapping

from fastapi import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """Per request: body bytes, items (images or texts), and pixels of one image (width x height, read from its
    header before it is decoded); top_k is at most the number of classes."""

    max_body_bytes: int = 16_000_000
    max_items: int = 64
    max_image_pixels: int = 40_000_000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def too_large(self, size: int) -> str:
        return (f"request body of {size} bytes is over the limit of {self.max_body_bytes} bytes (serve "
                "--max-body-mb); send fewer or smaller items per request")


class BodyLimit:
    """413 for a body over ``limits.max_body_bytes``: at once from its Content-Length, or while a chunked body
    streams in (raised as an HTTPException where the endpoint reads the body)."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            await refuse(send, 413, self.limits.too_large(int(declared)))
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limits.max_body_bytes:
                    raise HTTPException(413, self.limits.too_large(received))
            return message

        await self.app(scope, limited, send)


async def refuse(send: Send, status: int, detail: str) -> None:
    """A JSON error response, as FastAPI writes its own (``{"detail": ...}``)."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
