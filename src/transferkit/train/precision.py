"""The accelerator (device, mixed precision, gradient accumulation) and activation checkpointing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from transferkit.config import RunConfig
from transferkit.errors import TrainingError

if TYPE_CHECKING:
    from accelerate import Accelerator


def checkpoint_activations(backbone: torch.nn.Module) -> None:
    """``--grad-checkpointing``: the backbone keeps only its blocks' inputs and recomputes the rest in the backward
    pass. Lite0 gradual on hymenoptera, batch 32, 224 px: peak RSS 2.8 -> 2.4 GB, the same losses."""
    if hasattr(backbone, "set_grad_checkpointing"):  # timm
        backbone.set_grad_checkpointing(True)
    elif hasattr(backbone, "gradient_checkpointing_enable"):  # transformers
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        raise TrainingError(f"--grad-checkpointing: this backbone ({type(backbone).__name__}) cannot recompute its "
                            "activations; drop the option")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls and convolutions run natively (without them oneDNN emulates, slowly)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(config: RunConfig) -> str:
    """``auto``: bf16 autocast where the hardware has it (CUDA, or a CPU with native bf16), else fp32."""
    if config.precision != "auto":
        return config.precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "no"


def make_accelerator(config: RunConfig) -> "Accelerator":
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cuda = torch.cuda.is_available()
    precision = resolve_precision(config)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != precision:
        # accelerate keeps one process-wide state and refuses a second precision in the same process; a
        # second fit() with other settings (a notebook, the tests) resets the mixed-precision part of it.
        AcceleratorState._reset_state()
    return Accelerator(cpu=not cuda, mixed_precision=precision, gradient_accumulation_steps=config.grad_accum,
                       step_scheduler_with_optimizer=False)


