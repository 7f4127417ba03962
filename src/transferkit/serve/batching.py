"""Requests batched into the engine: items of concurrent requests are gathered for a few milliseconds (or up to
a batch's worth) and run through the model in one call, on one worker thread, so the event loop keeps taking
requests while the engine runs and ONNX Runtime gets batches instead of single items."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

Run = Callable[[list[Any]], np.ndarray]  # prepared items -> one row of probabilities per item


@dataclass
class Job:
    items: list[Any]
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MicroBatcher:
    """``await submit(items)`` -> the rows of ``run(items)``, computed in a batch with other requests' items.

    The worker task runs while the app's lifespan does (:meth:`start` / :meth:`stop`); without it (an app used
    without its lifespan) each request runs on its own, on the same worker thread."""

    def __init__(self, run: Run, max_batch: int = 32, max_wait: float = 0.005) -> None:
        self.run, self.max_batch, self.max_wait = run, max(1, max_batch), max(0.0, max_wait)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transferkit-engine")
        self.queue: asyncio.Queue[Job] | None = None
        self.task: asyncio.Task | None = None
        self.batches = 0  # engine calls so far, and the items they held (GET /metadata shows them)
        self.items = 0

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self.work())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.task, self.queue = None, None

    async def submit(self, items: Sequence[Any]) -> np.ndarray:
        job = Job(list(items))
        if self.queue is None:
            await self.execute([job])
        else:
            await self.queue.put(job)
        return await job.done

    async def work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            size, deadline = len(jobs[0].items), loop.time() + self.max_wait
            while size < self.max_batch:
                try:
                    job = self.queue.get_nowait() if self.queue.qsize() else await asyncio.wait_for(
                        self.queue.get(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                size += len(job.items)
            await self.execute(jobs)

    async def execute(self, jobs: list[Job]) -> None:
        """One engine call for all ``jobs``' items; each job gets its rows (or the exception)."""
        items = [item for job in jobs for item in job.items]
        try:
            rows = await asyncio.get_running_loop().run_in_executor(self.executor, self.run, items)
        except Exception as exc:  # noqa: BLE001 - handed to each waiting request, which answers for it
            for job in jobs:
                if not job.done.done():
                    job.done.set_exception(exc)
            return
        self.batches, self.items = self.batches + 1, self.items + len(items)
        start = 0
        for job in jobs:
            if not job.done.done():  # a request whose client went away was cancelled
                job.done.set_result(rows[start:start + len(job.items)])
            start += len(job.items)
