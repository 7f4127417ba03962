"""A loaded text run's model inputs, for export and serve: ``input_ids`` + ``attention_mask`` (int64, padded
to the longest text of the batch), tokenized by the run's own tokenizer, which an export carries."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from transferkit.features.graphs import export_graph
from transferkit.modalities.base import MODEL_OUTPUT, Batches
from transferkit.modalities.text.embed import padded_batches
from transferkit.modalities.text.encoder import TEXT_INPUTS, open_text_engine

if TYPE_CHECKING:
    import torch
    from torch import nn


class TextInputs:
    names = TEXT_INPUTS

    def __init__(self, clf: Any) -> None:
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
        export_graph(model, self.example(), path, self.names, MODEL_OUTPUT, sequence=True)  # as the text engine

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of ``texts`` as the run's model reads them (truncated to its max_length)."""
        return self.tokenizer.encode(list(texts), self.max_length)

    def batches(self, items: Sequence[Sequence[int]], batch_size: int) -> Batches:
        for batch, ids, mask in padded_batches(items, self.tokenizer.pad_token_id, batch_size):
            yield np.asarray(batch), (ids, mask)

    def engine(self) -> Callable[..., np.ndarray]:
        clf = self.clf
        clf.seed_run_engine()  # a fine-tuned run's own engine.onnx: opening it never pays a hidden export
        return open_text_engine(clf.spec_, clf.config.engine, clf.config.cache_dir, clf.feature_net)

    def add_files(self, folder: Path) -> None:
        self.tokenizer.save(folder / "tokenizer")

    def requests(self, service: Any, decoding: Any) -> Any:
        from transferkit.modalities.text.requests import TextRequests  # serve only: FastAPI

        return TextRequests(service, decoding)
