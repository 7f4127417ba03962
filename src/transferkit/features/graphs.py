"""One ONNX export for every graph transferkit writes: a feature engine (features/engines.py, a text encoder's)
and an exported whole model (``Modality.inputs``). The exporter prints pages of diagnostics and a half-written
file must never be seen, so each goes through :func:`export_atomically`."""

from __future__ import annotations

import contextlib
import inspect
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from transferkit.atomic import atomic_write

if TYPE_CHECKING:
    import torch
    from torch import nn

MAX_BATCH = 4096  # an exported graph's upper bound on the batch dimension (torch.export needs one)


def export_atomically(path: Path, export: Callable[[str], None]) -> None:
    """Run ``export(tmp_path)`` quietly (the exporters print pages of diagnostics), then rename the file into
    place: concurrent exporters never see half a model."""
    def quietly(tmp: Path) -> None:
        buffer = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            warnings.simplefilter("ignore")
            export(str(tmp))

    atomic_write(path, quietly, suffix=".tmp.onnx")


def export_graph(net: "nn.Module", example: tuple["torch.Tensor", ...], path: Path, inputs: Sequence[str],
                 output: str, sequence: bool = False) -> None:
    """``net`` at ``path``, its inputs named ``inputs`` with a dynamic batch axis, by torch.export; ``sequence``:
    inputs of token ids, whose second axis is dynamic too, by the TorchScript-based exporter (as text encoders'
    engines have always been exported: a change of exporter would change their cached graphs)."""
    import torch

    if sequence:
        axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
        export_atomically(path, lambda tmp: torch.onnx.export(
            net.eval(), example, tmp, dynamo=False, opset_version=17, input_names=list(inputs),
            output_names=[output], dynamic_axes={**axes, output: {0: "batch"}}))
        return
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    export_atomically(path, lambda tmp: torch.onnx.export(
        net.eval(), example, tmp, dynamo=True, external_data=False, input_names=list(inputs),
        output_names=[output], dynamic_shapes=batch_shapes(net, len(example), batch)))


def batch_shapes(net: "nn.Module", count: int, batch: object) -> dict[str, object]:
    """torch.export's shapes, keyed by ``net.forward``'s parameters: axis 0 of each input is ``batch`` (a
    ``forward(*inputs)`` takes them as one tuple)."""
    params = list(inspect.signature(net.forward).parameters.values())
    if params and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        return {params[0].name: tuple({0: batch} for _ in range(count))}
    return {param.name: {0: batch} for param in params[:count]}
