"""Loaders that turn :class:`~transferkit.train.data.TrainData` into :class:`~transferkit.train.losses.Batch`
objects: each sample keeps its index (so frozen forwards and terms can key state by sample), a batch
transform (mixup) makes soft targets, and a second, unlabelled stream rides along when the data has one."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from transferkit.train.data import TrainData
from transferkit.train.losses import Batch

if TYPE_CHECKING:
    from accelerate import Accelerator


class Indexed(Dataset):
    """``dataset[i]`` as ``(i, inputs, label)``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any, Any]:
        return (index, *self.dataset[index])


class IndexedCollate:
    def __init__(self, collate: Callable | None) -> None:
        self.collate = collate or default_collate

    def __call__(self, items: list[tuple[int, Any, Any]]) -> tuple[torch.Tensor, Any, Any]:
        inputs, labels = self.collate([(x, y) for _, x, y in items])
        return torch.tensor([i for i, _, _ in items], dtype=torch.long), inputs, labels


def make_loader(data: TrainData, batch_size: int, accelerator: "Accelerator") -> DataLoader:
    """The epoch loader: the data's batch sampler if it has one, else its sampler in ``batch_size`` batches
    (dropping a last short batch when a batch transform pairs samples up, or when it would hold one item: a
    BatchNorm after pooling, MobileNetV4's head, cannot normalise one value per channel in training mode)."""
    common = {"collate_fn": IndexedCollate(data.collate), "num_workers": data.workers}
    if data.batch_sampler is not None:
        loader = DataLoader(Indexed(data.dataset), batch_sampler=data.batch_sampler, **common)
    else:
        drop_last = len(data) > batch_size and (data.batch_transform is not None or len(data) % batch_size == 1)
        loader = DataLoader(Indexed(data.dataset), batch_size=batch_size, sampler=data.sampler, drop_last=drop_last,
                            **common)
    return accelerator.prepare_data_loader(loader)


def set_epoch(data: TrainData, loader: Any, epoch: int) -> None:
    """Every epoch-dependent part: the sampler's order, the dataset's augmentation seeds, and accelerate's
    loader (which counts its own iterations and passes them to the sampler)."""
    data.sampler.set_epoch(epoch)
    if hasattr(data.dataset, "set_epoch"):
        data.dataset.set_epoch(epoch)
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)


class BatchStream:
    """One epoch of :class:`Batch` objects, resumable after ``skip`` batches.

    The unlabelled stream (if any) restarts at every epoch from its own ``(seed, epoch)`` order and cycles
    when it is shorter than the labelled one, so batch ``k`` of an epoch always meets the same unlabelled
    batch, whether or not the epoch was interrupted before ``k``."""

    def __init__(self, data: TrainData, batch_size: int, accelerator: "Accelerator") -> None:
        self.data, self.accelerator = data, accelerator
        self.loader = make_loader(data, batch_size, accelerator)
        self.unlabelled = make_loader(data.unlabelled, batch_size, accelerator) if data.unlabelled else None

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """The epoch's batches from batch ``skip`` on, before their batch transform (see :meth:`transform`)."""
        set_epoch(self.data, self.loader, epoch)
        labelled = skip_first(self.loader, skip)
        others = self.cycle_unlabelled(epoch, skip)
        for index, inputs, labels in labelled:
            yield self.batch(index, inputs, labels, next(others) if others is not None else None)

    def cycle_unlabelled(self, epoch: int, skip: int) -> Iterator[Any] | None:
        if self.unlabelled is None:
            return None
        set_epoch(self.data.unlabelled, self.unlabelled, epoch)
        length = max(1, len(self.unlabelled))

        def forever() -> Iterator[Any]:
            offset = skip % length
            for _ in range(math.ceil((len(self.loader) + length) / length) + 1):
                loader = skip_first(self.unlabelled, offset)
                offset = 0
                for _, inputs, _ in loader:
                    yield inputs

        return forever()

    @staticmethod
    def batch(index: torch.Tensor, inputs: Any, labels: torch.Tensor, unlabelled: Any) -> Batch:
        if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return Batch(inputs, labels, index, None, unlabelled)

    def transform(self, batch: Batch) -> Batch:
        """The data's batch transform (mixup), applied by the loop after it has set the step's RNG state."""
        if self.data.batch_transform is not None:
            batch.inputs, batch.targets = self.data.batch_transform(batch.inputs, batch.labels)
        return batch


def skip_first(loader: Any, count: int) -> Any:
    from accelerate import skip_first_batches

    return skip_first_batches(loader, count) if count else loader
