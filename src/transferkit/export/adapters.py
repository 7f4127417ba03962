"""What exporting and serving a run need to know about its modality's inputs.

The whole model takes what the run's feature engine takes: images as ``uint8`` NHWC (normalisation is inside
the model), texts as ``input_ids`` + ``attention_mask`` (int64, padded to the longest text of the batch). An
adapter per modality says how to describe those inputs, build an example for the exporters, cut prepared items
into batches, open the run's feature engine, and which files an export carries besides the model. The adapter
is found by the modality object itself (:func:`inputs_for`); nothing here switches on a modality's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from transferkit.errors import TransferkitError
from transferkit.features.engines import export_atomically, open_engine
from transferkit.modalities import IMAGE, TEXT
from transferkit.modalities.base import Modality
from transferkit.modalities.text.embed import padded_batches
from transferkit.modalities.text.encoder import open_text_engine

if TYPE_CHECKING:
    import torch
    from torch import nn

    from transferkit.estimators.core import TransferClassifier

Arrays = tuple[np.ndarray, ...]
Batches = Iterator[tuple[np.ndarray, Arrays]]  # (positions of the batch's items in the input, model inputs)
OUTPUT = "probabilities"
MAX_BATCH = 4096  # the exported graph's upper bound on the batch dimension


class ModelInputs(Protocol):
    """The inputs of one run's model (an adapter is made per classifier: :func:`inputs_for`)."""

    modality: Modality
    names: tuple[str, ...]  # the model's input names, in call order

    def contract(self, preprocessing: dict[str, Any]) -> dict[str, Any]:
        """preprocessing.json of an export: the run's own, plus the inputs and how to prepare them."""

    def example(self) -> tuple["torch.Tensor", ...]:
        """A small batch of valid inputs, for tracing and exporting."""

    def export_onnx(self, model: "nn.Module", path: Path) -> None:
        """``model`` as ONNX at ``path``, with a dynamic batch (and sequence) axis, atomically."""

    def batches(self, items: Any, batch_size: int) -> Batches:
        """Prepared items (decoded images, token ids) as the model's input arrays, batch by batch."""

    def engine(self) -> Callable[..., np.ndarray]:
        """The run's feature engine (ONNX Runtime on CPU, torch on a GPU), opened once: inputs -> features."""

    def add_files(self, folder: Path) -> None:
        """Files the export needs beside the model (a text run's tokenizer)."""


class ImageInputs:
    modality = IMAGE
    names = ("images",)

    def __init__(self, clf: "TransferClassifier") -> None:
        self.clf, self.preprocessing = clf, clf.spec_.preprocessing

    def contract(self, preprocessing: dict[str, Any]) -> dict[str, Any]:
        pre, size = self.preprocessing, self.preprocessing.input_size
        return {**preprocessing, "inputs": [{"name": "images", "dtype": "uint8", "shape": ["batch", size, size, 3],
                                             "layout": "NHWC, RGB"}],
                "prepare": f"decode as RGB (EXIF orientation applied), resize the short side to {pre.resize_size} "
                           f"px ({pre.interpolation}), centre-crop {size}x{size}; the mean/std normalisation is "
                           "inside the model"}

    def example(self) -> tuple["torch.Tensor", ...]:
        import torch  # export only: serving and reading a run need no torch

        size = self.preprocessing.input_size
        noise = torch.Generator().manual_seed(0)
        return (torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8, generator=noise),)

    def export_onnx(self, model: "nn.Module", path: Path) -> None:
        import torch  # export only

        # as the feature engine is exported (features/engines.py): torch.export, the batch axis dynamic
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        export_atomically(path, lambda tmp: torch.onnx.export(
            model.eval(), self.example(), tmp, dynamo=True, external_data=False, input_names=list(self.names),
            output_names=[OUTPUT], dynamic_shapes={"inputs": ({0: batch},)}))

    def batches(self, items: Any, batch_size: int) -> Batches:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            yield np.arange(start, start + len(chunk)), (np.ascontiguousarray(np.stack(list(chunk))),)

    def engine(self) -> Callable[..., np.ndarray]:
        spec, config = self.clf.spec_, self.clf.config
        return open_engine(spec.fingerprint, self.preprocessing.input_size, self.clf.feature_net, config.engine,
                           config.cache_dir, spec.name)

    def add_files(self, folder: Path) -> None:
        return None


class TextInputs:
    modality = TEXT
    names = ("input_ids", "attention_mask")

    def __init__(self, clf: "TransferClassifier") -> None:
        self.clf, self.tokenizer = clf, clf.spec_.load_tokenizer()
        self.max_length = clf.config.max_length

    def contract(self, preprocessing: dict[str, Any]) -> dict[str, Any]:
        pad = self.tokenizer.pad_token_id
        return {**preprocessing, "tokenizer": "tokenizer/", "pad_token_id": pad,
                "inputs": [{"name": name, "dtype": "int64", "shape": ["batch", "sequence"]} for name in self.names],
                "prepare": "tokenize with the files in tokenizer/ (tokenizer.json: the tokenizers library, or "
                           f"transformers' AutoTokenizer) with the special tokens, truncate to {self.max_length} "
                           f"tokens, pad to the batch's longest text with id {pad}; attention_mask is 1 for tokens "
                           "and 0 for padding"}

    def example(self) -> tuple["torch.Tensor", ...]:
        import torch  # export only

        ids = torch.ones((2, 8), dtype=torch.long)
        return ids, torch.ones_like(ids)

    def export_onnx(self, model: "nn.Module", path: Path) -> None:
        import torch  # export only

        # as the text engine is exported (modalities/text/encoder.py): the TorchScript-based exporter
        axes = {name: {0: "batch", 1: "sequence"} for name in self.names}
        export_atomically(path, lambda tmp: torch.onnx.export(
            model.eval(), self.example(), tmp, dynamo=False, opset_version=17, input_names=list(self.names),
            output_names=[OUTPUT], dynamic_axes={**axes, OUTPUT: {0: "batch"}}))

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of ``texts`` as the run's model reads them (truncated to its max_length)."""
        return self.tokenizer.encode(list(texts), self.max_length)

    def batches(self, items: Sequence[Sequence[int]], batch_size: int) -> Batches:
        for batch, ids, mask in padded_batches(items, self.tokenizer.pad_token_id, batch_size):
            yield np.asarray(batch), (ids, mask)

    def engine(self) -> Callable[..., np.ndarray]:
        clf = self.clf
        return open_text_engine(clf.spec_, clf.config.engine, clf.config.cache_dir, clf.feature_net)

    def add_files(self, folder: Path) -> None:
        self.tokenizer.save(folder / "tokenizer")


ADAPTERS: tuple[type, ...] = (ImageInputs, TextInputs)


def inputs_for(clf: "TransferClassifier") -> ModelInputs:
    """The input adapter of ``clf``'s run, chosen by its modality (the object, not its name)."""
    for adapter in ADAPTERS:
        if adapter.modality is clf.modality:
            return adapter(clf)
    raise TransferkitError(f"exporting and serving {clf.modality.name} runs is not supported yet; they work for "
                           f"{', '.join(a.modality.name for a in ADAPTERS)} runs")
