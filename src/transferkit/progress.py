"""Progress reporting: a rich bar on a terminal, plain log lines in CI or when output is piped."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console

console = Console(stderr=True, highlight=False)


def interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def log(message: str) -> None:
    console.print(message, markup=False) if interactive() else print(message, file=sys.stderr, flush=True)


@contextmanager
def progress(total: int, description: str, enabled: bool = True,
             done: int = 0) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``. Plain mode logs at most every 10% and at the end, with the rate. ``done`` items
    were finished before (a resumed epoch): they count towards the total, not towards the rate."""
    start = time.perf_counter()
    if not enabled or total <= 0:
        yield lambda n=1: None
        return
    if interactive():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(description, total=total, rate="", completed=done)

            def advance(n: int = 1) -> None:
                new = bar.tasks[0].completed + n - done
                bar.update(task, advance=n, rate=f"{new / max(time.perf_counter() - start, 1e-9):.0f}/s")

            yield advance
    else:
        state = {"done": done, "next": done + max(1, total // 10)}

        def advance(n: int = 1) -> None:
            state["done"] += n
            if state["done"] >= state["next"] or state["done"] >= total:
                elapsed = max(time.perf_counter() - start, 1e-9)
                new = max(state["done"] - done, 1)
                rate = new / elapsed
                log(f"{description}: {state['done']}/{total} ({rate:.0f}/s)" if rate >= 10 else
                    f"{description}: {state['done']}/{total} ({elapsed / new:.2f} s each)")
                state["next"] = state["done"] + max(1, total // 10)

        yield advance
