"""``transferkit demo``: the main job on an embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from transferkit.bounds import option_check
from transferkit.config import SEED


def demo(
    seed: Annotated[int, typer.Option(help="Seed of the validation split and of training",
                                      callback=option_check(SEED, "--seed"))] = 0,
    workdir: Annotated[Optional[Path], typer.Option(help="Where to write the runs and the report (default: a new "
                                                         "temporary folder, kept)")] = None,
) -> None:
    """The main job on an embedded default: a CIFAR-10 sample, raw pixels vs scratch vs probe vs fine-tune vs LoRA."""
    from transferkit.demo import run_demo  # lazy: numpy, torch

    run_demo(seed=seed, workdir=workdir)
