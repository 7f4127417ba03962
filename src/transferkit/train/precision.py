"""The accelerator: device, mixed precision and gradient accumulation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from transferkit.config import RunConfig

if TYPE_CHECKING:
    from accelerate import Accelerator

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


