"""Memory in flight across concurrent requests: each request's bodies, and the working memory of decoding its
items (an image's pixels, a text's tokens), are admitted into a shared byte budget before they are held; past
it the server answers 503 with ``Retry-After`` instead of growing until the machine runs out of memory (14
uploads of a 35 kB 6000x6000 PNG, each under the per-image limit, took a server from 270 MB to 2.8 GB). What an
item costs is its modality's to say (modalities/image/images.py: image_cost, text/tokenizer.py: text_cost)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from fastapi import HTTPException

RETRY_AFTER_S = 1  # what a refused client is told to wait: decodes take well under a second each

MB = 1_000_000


def megabytes(size: int) -> str:
    return f"{size / MB:.0f} MB" if size >= 10 * MB else f"{size / MB:.3g} MB"


class MemoryBudget:
    """A byte counter shared by the server's threads: ``hold(n)`` admits ``n`` bytes while fewer than
    ``capacity`` are held (waiting up to ``wait`` seconds for room), else raises a 503. One claim larger than the
    whole budget is admitted alone, once nothing else is held, so that every item the per-item limits let
    through can still be served: memory stays under max(capacity, the largest claim)."""

    def __init__(self, capacity: int, what: str, option: str, wait: float = 1.0) -> None:
        self.capacity, self.what, self.option, self.wait = capacity, what, option, wait
        self.held = 0
        self.high_water = 0  # the most bytes held at once (GET /metadata shows it)
        self.refused = 0
        self.room = threading.Condition()

    def fits(self, size: int) -> bool:
        return self.held + size <= self.capacity or self.held == 0

    def take(self, size: int, wait: float | None = None, what: str = "") -> None:
        """Claim ``size`` bytes, or raise the 503 (naming ``what`` needs them) after ``wait`` seconds
        (``self.wait`` unless given)."""
        with self.room:
            if not self.room.wait_for(lambda: self.fits(size), self.wait if wait is None else wait):
                self.refused += 1
                raise self.busy(size, what or self.what)
            self.held += size
            self.high_water = max(self.high_water, self.held)

    def give(self, size: int) -> None:
        with self.room:
            self.held -= size
            self.room.notify_all()

    @contextmanager
    def hold(self, size: int, what: str = "") -> Iterator[None]:
        self.take(size, None, what)
        try:
            yield
        finally:
            self.give(size)

    def busy(self, size: int, what: str) -> HTTPException:
        return HTTPException(503, f"server busy: {what} needs {megabytes(size)} and {megabytes(self.held)} of the "
                                  f"server's {megabytes(self.capacity)} for it are in use ({self.option}); retry "
                                  f"in {RETRY_AFTER_S} s",
                             headers={"Retry-After": str(RETRY_AFTER_S)})

    def to_dict(self) -> dict[str, int]:
        return {"capacity": self.capacity, "held": self.held, "high_water": self.high_water,
                "refused": self.refused}
