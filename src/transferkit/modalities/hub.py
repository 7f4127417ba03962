"""Whether a model hub can be reached, decided at once, and downloads without pages of retry messages.

Offline, huggingface_hub retries each file five times with back-off (about 46 s for a timm name) and logs
every try. We decide before asking it: the variables huggingface_hub itself reads (``HF_HUB_OFFLINE``, or
transformers' ``TRANSFORMERS_OFFLINE``) say so without any network use; otherwise one TCP connection to the
hub's host, with a short timeout, tells a machine without network from one with it.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlsplit

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
PROBE_SECONDS = 2.0
HF_DEFAULT_ENDPOINT = "https://huggingface.co"


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT


def offline_reason(url: str | None = None) -> str | None:
    """Why the hub at ``url`` (the Hugging Face endpoint by default) cannot be used now; None when it can,
    or when only trying will tell (a proxy is configured)."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name} is set"
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None
    parts = urlsplit(url or hf_endpoint())
    host = parts.hostname or ""
    port = parts.port or (80 if parts.scheme == "http" else 443)
    return None if reachable(host, port) else f"{host} cannot be reached"


@functools.lru_cache(maxsize=None)
def reachable(host: str, port: int) -> bool:
    """One connection attempt (name lookup included) bounded by ``PROBE_SECONDS``; remembered per process."""
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)  # a stuck name lookup has no timeout of its own
    thread.start()
    thread.join(PROBE_SECONDS + 0.5)
    return bool(result and result[0])


@contextmanager
def quiet_hub() -> Iterator[None]:
    """huggingface_hub's retry warnings off while a download runs: a failure ends in our one-line error."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def cached_hub_file(repo_id: str, filenames: tuple[str, ...]) -> str | None:
    """The first of ``filenames`` that the local Hugging Face cache holds for ``repo_id`` (``id@revision``)."""
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = repo_id.partition("@")
    for filename in filenames:
        found = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(found, str):
            return found
    return None
