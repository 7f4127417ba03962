"""``transferkit demo``: the main job on an embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def demo(
    per_class: Annotated[int, typer.Option(help="Labelled images per class")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the labelled sample")] = 0,
    workdir: Annotated[Optional[Path], typer.Option(help="Where to write the demo images and run")] = None,
) -> None:
    """The main job on an embedded default: scikit-learn's digits, probe vs baselines without pretraining."""
    from transferkit.demo import run_demo  # lazy: numpy and scikit-learn

    run_demo(per_class=per_class, seed=seed, workdir=workdir)
