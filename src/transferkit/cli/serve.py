"""``transferkit serve``: a run behind an HTTP API (FastAPI + uvicorn), on loopback unless told otherwise."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated

import typer

from transferkit.cli.evaluate import RUN_HELP, CacheDir
from transferkit.errors import TransferkitError
from transferkit.config import MAX_IMAGE_PIXELS
from transferkit.progress import log

# The range of each numeric option (name -> lowest, highest, what follows them in a message). The highest values
# are what one process can hold: a body is read whole into memory, Pillow refuses images over MAX_IMAGE_PIXELS
# anyway, and a batch is one engine call's inputs.
BOUNDS = {"port": (0, 65535, " (0: any free port)"),
          "max-body-mb": (0.001, 1024, " MB"), "max-items": (1, 10_000, " items"),
          "max-image-mp": (0.001, MAX_IMAGE_PIXELS // 1_000_000, " million pixels (Pillow refuses larger images)"),
          "batch-size": (1, 1024, " items"), "batch-wait-ms": (0, 1000, " ms"),
          "max-inflight-mb": (1, 1_000_000, " MB"), "decode-budget-mb": (1, 1_000_000, " MB")}


def serve(
    run: Annotated[Path, typer.Argument(help=RUN_HELP)],
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback lets other machines in "
                                           "(there is no authentication)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port)")] = 8000,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body, in MB (413 above)")] = 16.0,
    max_items: Annotated[int, typer.Option(help="Most images or texts in one request (422 above)")] = 64,
    max_image_mp: Annotated[float, typer.Option(help="Most pixels of one image, in millions (422 above)")] = 40.0,
    batch_size: Annotated[int, typer.Option(help="Most items batched into one engine call")] = 32,
    batch_wait_ms: Annotated[float, typer.Option(help="How long the first item of a batch waits for others")] = 5.0,
    max_inflight_mb: Annotated[float, typer.Option(help="Most MB of request bodies held at once, all requests "
                                                        "together (503 with Retry-After above)")] = 256.0,
    decode_budget_mb: Annotated[float, typer.Option(help="Most MB that decoding images or tokenizing texts may "
                                                         "take at once, all requests together (503 with "
                                                         "Retry-After above)")] = 512.0,
    cache_dir: CacheDir = None,
) -> None:
    """POST /predict (image files as multipart field 'files', or JSON {"texts": [...]}; ?top_k=N) answers the top
    labels with probabilities; GET /health, GET /metadata; OpenAPI docs at /docs."""
    try:
        import uvicorn  # lazy, and an extra: pip install 'transferkit[serve]'

        from transferkit.serve.app import create_app
        from transferkit.serve.limits import Limits
    except ImportError as exc:
        raise TransferkitError(f"serve needs FastAPI and uvicorn ({exc.name} is not installed); run "
                               "`pip install 'transferkit[serve]'`") from None
    for name, value in (("port", port), ("max-body-mb", max_body_mb), ("max-items", max_items),
                        ("max-image-mp", max_image_mp), ("batch-size", batch_size), ("batch-wait-ms", batch_wait_ms),
                        ("max-inflight-mb", max_inflight_mb), ("decode-budget-mb", decode_budget_mb)):
        bounded(name, value)
    limits = Limits(max_body_bytes=int(max_body_mb * 1e6), max_items=max_items,
                    max_image_pixels=int(max_image_mp * 1e6), max_inflight_bytes=int(max_inflight_mb * 1e6),
                    decode_budget_bytes=int(decode_budget_mb * 1e6))
    listeners = listen(host, port)  # before the run loads: a taken port is said at once
    try:
        app = create_app(run, limits, batch_size, batch_wait_ms, cache_dir)
        if not is_loopback(host):
            log(f"warning: listening on {host}: other machines can reach this server, and it has no authentication")
        port = listeners[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
        log(f"serving {run} on http://{shown}:{port} (API docs at /docs); Ctrl-C stops")
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                      access_log=False)).run(sockets=listeners)
    finally:
        for listener in listeners:
            listener.close()


def bounded(name: str, value: float) -> None:
    """A TransferkitError unless ``value`` is within the option's range (NaN and infinity never are)."""
    low, high, unit = BOUNDS[name]
    if not low <= value <= high:
        raise TransferkitError(f"--{name} {value}: expected a value from {low} to {high}{unit}")


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to ``host``:``port`` (every address the name resolves to, as uvicorn would bind: localhost
    may be ::1 and 127.0.0.1), or a TransferkitError saying why not."""
    if not host.strip():  # getaddrinfo would take "" for every interface
        raise TransferkitError("--host '': expected an address, such as 127.0.0.1 (this machine only) or 0.0.0.0 "
                               "(every interface)")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise TransferkitError(f"--host {host!r}: not an address or host name this machine can resolve ({reason}); "
                               "use 127.0.0.1 (this machine only) or one of its addresses") from None
    listeners: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in dict.fromkeys(found):
            listeners.append(socket.socket(family, kind, protocol))
            listeners[-1].setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart at once
            if family == socket.AF_INET6:  # as asyncio: :: beside 0.0.0.0 takes only IPv6
                listeners[-1].setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(listeners) > 1:  # one free port for every address
                address = (address[0], listeners[0].getsockname()[1], *address[2:])
            listeners[-1].bind(address)
    except OSError as exc:
        for listener in listeners:
            listener.close()
        raise TransferkitError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); choose "
                               "another --port (or --host), or stop what is using it") from None
    return listeners


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False
