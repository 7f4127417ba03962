"""Feature extraction split across the processes of a launch (``torchrun``, ``accelerate launch``).

Every rank of a launch runs ``fit`` on the same items. Inside :func:`across_ranks` (the estimator's one
extraction pass over its splits), the items missing from the cache are dealt out: rank r of N extracts every
N-th one from the r-th and writes them as shards of its own (uniquely named, written atomically: cache.py) into
the shared cache; after a barrier, every rank reads the others' rows from the cache. Whatever is still missing
then (unreadable files, a cache another rank could not write or does not share) each rank extracts itself, so
the rows never depend on the split: only the time does.

The barrier is accelerate's process group (``PartialState``), the one the fine-tuning loop then uses in the
same process: gloo on CPU, NCCL on GPUs. It is joined on the first barrier, not before, so rank 0 exports a
missing engine (in a forked child: child.py) before the group's threads exist. This module is torch-free.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator, Sequence, TypeVar

T = TypeVar("T")

# Set by across_ranks(): only code that every rank of a launch runs with the same items may split (a rank-0-only
# call, such as writing a report after the fit, would wait at a barrier no other rank reaches).
SPLITTING: ContextVar[bool] = ContextVar("transferkit_extraction_across_ranks", default=False)


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, "").strip() or default)
    except ValueError:  # a launcher sets numbers; anything else is no launch
        return default


def launch_size() -> tuple[int, int]:
    """(rank, world size) of the launch this process belongs to; (0, 1) when it was not launched as one of
    several (a scheduler's RANK alone is no launch)."""
    world = env_int("WORLD_SIZE", 1)
    rank = env_int("RANK", 0)
    return (rank, world) if world > 1 and 0 <= rank < world else (0, 1)


def cores_per_process() -> int:
    """This machine's cores shared out among the launch's processes on it (``LOCAL_WORLD_SIZE``): two ranks on
    two cores each take one, rather than each spinning two threads over the other's core."""
    return max(1, (os.cpu_count() or 1) // max(1, env_int("LOCAL_WORLD_SIZE", 1)))


@dataclass(frozen=True)
class Ranks:
    """This process's place in a launch, and the barrier that waits for all of it."""

    rank: int = 0
    world: int = 1

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every ``world``-th from the ``rank``-th, disjoint across ranks."""
        return list(items[self.rank::self.world])

    def barrier(self) -> None:
        if self.world > 1:
            from accelerate import PartialState  # lazy: torch; a single process never pays for it
            from torch.cuda import is_available

            # cpu= as train/precision.py's Accelerator asks, so the fine-tune that may follow finds the same state
            PartialState(cpu=not is_available()).wait_for_everyone()

    @contextmanager
    def first(self) -> Iterator[None]:
        """Rank 0 runs the block before the others do: an engine it exports or builds is cached for them. No
        rank leaves before every rank has run it, so what each read of the cache there is read before any rank
        writes to it. Rank 0 lets the others go on even when its block fails (they then meet the same error)."""
        if self.rank:
            self.barrier()
        try:
            yield
        finally:
            if not self.rank:
                self.barrier()
        self.barrier()


SINGLE = Ranks()


@contextmanager
def across_ranks() -> Iterator[None]:
    """Within the block, extraction is split across the launch's ranks: every rank must run the block, with
    the same items in the same order (as each rank's ``fit`` does)."""
    token = SPLITTING.set(True)
    try:
        yield
    finally:
        SPLITTING.reset(token)


def extraction_ranks() -> Ranks:
    """The ranks to split extraction across here: the launch's inside :func:`across_ranks`, else this process."""
    if not SPLITTING.get():
        return SINGLE
    rank, world = launch_size()
    return Ranks(rank, world)
