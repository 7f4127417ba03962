"""Text fine-tuning: a Hugging Face encoder + a new head, trained by the same engine as images.

:class:`~transferkit.modalities.text.modality.TextModality` hands the training loop a :class:`TextModel` and
token batches (:func:`text_train_data`); strategies, layer-wise LR decay (blocks = embeddings, one per
transformer layer), checkpoints, resume, early stopping and accelerate (DDP, bf16) are shared with images.
What is particular to text:

* batches group texts of similar length: each epoch's shuffled order is cut into chunks of
  ``LENGTH_GROUP`` batches, each chunk is sorted by length and split into batches, and the batches are
  shuffled again. Padding falls from ~2x to a few per cent of the tokens (rt_polarity: 53 -> 31 tokens
  a sentence at batch 32), which is most of the speed-up over a Trainer epoch;
* ``gradual`` starts from the linear-probe head fitted on cached embeddings and has no head-only epochs
  by default (``freeze_epochs`` null -> 0): without augmentation the probe's head already is that phase's
  optimum, computed exactly in seconds instead of an epoch of forward passes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from transferkit.config import RunConfig
from transferkit.modalities.base import Split
from transferkit.modalities.text.embed import pad_batch, padded_batches
from transferkit.train.data import EpochSampler, TrainData, epoch_seed

if TYPE_CHECKING:
    from accelerate import Accelerator

    from transferkit.modalities.text.tokenizer import TextTokenizer

LENGTH_GROUP = 50  # batches per length-sorted chunk: enough to pad little, few enough to keep batches mixed


class TextModel(nn.Module):
    """Token batches -> logits: ``features`` (encoder + pooling, the text engine's network) and ``head``."""

    def __init__(self, features: nn.Module, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Linear(num_features, num_classes)

    @property
    def backbone(self) -> nn.Module:
        return self.features.encoder

    def forward(self, batch: dict[str, torch.Tensor], with_features: bool = False,
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits; ``with_features=True`` returns ``(pooled features, logits)`` (see ImageModel.forward)."""
        features = self.features(batch["input_ids"], batch["attention_mask"])
        logits = self.head(features)
        return (features, logits) if with_features else logits


class TokenDataset(torch.utils.data.Dataset):
    def __init__(self, ids: Sequence[Sequence[int]], labels: Sequence[int]) -> None:
        self.ids, self.labels = list(ids), list(labels)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Sequence[int], int]:
        return self.ids[index], self.labels[index]


class PadCollate:
    """A batch of (token ids, label) -> ({input_ids, attention_mask} padded to its longest text, labels)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[tuple[Sequence[int], int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        input_ids, mask = pad_batch([ids for ids, _ in items], self.pad_id)
        inputs = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
        return inputs, torch.tensor([label for _, label in items], dtype=torch.long)


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Batches of similar length from ``sampler``'s epoch order (see the module docstring).

    ``sampler`` is exposed under that name because accelerate's loader calls ``batch_sampler.sampler.set_epoch``.
    """

    def __init__(self, sampler: EpochSampler, lengths: Sequence[int], batch_size: int) -> None:
        self.sampler, self.lengths, self.batch_size = sampler, np.asarray(lengths), batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self):
        order = list(self.sampler)
        chunk = self.batch_size * LENGTH_GROUP
        batches = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start:start + chunk], key=lambda i: -self.lengths[i])
            batches.extend(part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size))
        generator = torch.Generator().manual_seed(epoch_seed(self.sampler.seed, self.sampler.epoch) + 1)
        return iter([batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()])


@torch.no_grad()
def predict_text_proba(model: nn.Module, ids: Sequence[Sequence[int]], pad_id: int, batch_size: int,
                       accelerator: "Accelerator | None" = None) -> np.ndarray:
    """Softmax outputs for tokenised texts, in length-sorted batches, returned in input order."""
    was_training = model.training
    model.eval()
    device = accelerator.device if accelerator is not None else torch.device("cpu")
    out: np.ndarray | None = None
    for batch, input_ids, mask in padded_batches(ids, pad_id, batch_size):
        inputs = {"input_ids": torch.from_numpy(input_ids).to(device), "attention_mask": torch.from_numpy(mask).to(device)}
        with (accelerator.autocast() if accelerator is not None else torch.autocast("cpu", enabled=False)):
            proba = torch.softmax(model(inputs).float(), dim=1).cpu().numpy()
        if out is None:
            out = np.zeros((len(ids), proba.shape[1]), np.float32)
        out[batch] = proba
    model.train(was_training)
    return out if out is not None else np.zeros((0, 0), np.float32)


def text_train_data(split: Split, tokenizer: "TextTokenizer", config: RunConfig,
                    defaults: Mapping[str, Any]) -> TrainData:
    """Tokenised training texts in length-grouped batches (see the module docstring), padded per batch."""
    ids = tokenizer.encode(list(split.items), config.max_length)
    labels = [int(y) for y in split.labels]
    sampler = EpochSampler(labels, config.seed, config.balanced_sampler)
    batches = LengthGroupedBatches(sampler, [len(x) for x in ids], config.setting("batch_size", defaults))
    return TrainData(TokenDataset(ids, labels), sampler, labels, defaults=defaults,
                     collate=PadCollate(tokenizer.pad_token_id), batch_sampler=batches, items=list(split.items))
