"""``transferkit serve``: a run behind an HTTP API (FastAPI + uvicorn), on loopback unless told otherwise."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from transferkit.cli.evaluate import RUN_HELP, CacheDir
from transferkit.errors import TransferkitError
from transferkit.progress import log


def serve(
    run: Annotated[Path, typer.Argument(help=RUN_HELP)],
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback lets other machines in "
                                           "(there is no authentication)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body, in MB (413 above)")] = 16.0,
    max_items: Annotated[int, typer.Option(help="Most images or texts in one request (422 above)")] = 64,
    max_image_mp: Annotated[float, typer.Option(help="Most pixels of one image, in millions (422 above)")] = 40.0,
    batch_size: Annotated[int, typer.Option(help="Most items batched into one engine call")] = 32,
    batch_wait_ms: Annotated[float, typer.Option(help="How long the first item of a batch waits for others")] = 5.0,
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
    for name, value in (("max-body-mb", max_body_mb), ("max-items", max_items), ("max-image-mp", max_image_mp),
                        ("batch-size", batch_size)):
        if value <= 0:
            raise TransferkitError(f"--{name} {value}: expected a positive number")
    if not 0 <= port <= 65535:
        raise TransferkitError(f"--port {port}: expected a port number from 0 to 65535")
    if batch_wait_ms < 0:
        raise TransferkitError(f"--batch-wait-ms {batch_wait_ms}: expected 0 ms or more")
    limits = Limits(max_body_bytes=int(max_body_mb * 1e6), max_items=max_items,
                    max_image_pixels=int(max_image_mp * 1e6))
    app = create_app(run, limits, batch_size, batch_wait_ms, cache_dir)
    if not is_loopback(host):
        log(f"warning: listening on {host}: other machines can reach this server, and it has no authentication")
    log(f"serving {run} on http://{host}:{port} (API docs at /docs); Ctrl-C stops")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False
