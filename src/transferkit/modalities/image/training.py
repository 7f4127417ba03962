"""Image training data: seeded per-sample augmentation, the evaluation decode, and image prediction."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from transferkit.config import FINETUNE_DEFAULTS, RunConfig
from transferkit.errors import DataError
from transferkit.modalities.base import Split
from transferkit.modalities.image.images import load_rgb
from transferkit.modalities.image.pipeline import decode_batches
from transferkit.modalities.image.preprocessing import Preprocessing
from transferkit.train.data import EpochSampler, TrainData, epoch_seed, loader_workers

if TYPE_CHECKING:
    from accelerate import Accelerator


class TrainImages(torch.utils.data.Dataset):
    """Training images through a PIL transform that yields float CHW tensors in [0, 1].

    Each sample's augmentation draws from RNGs seeded by ``(seed, epoch, index)`` and leaves the caller's
    RNG untouched, so a batch is the same whichever worker decodes it, with any number of workers, and
    after a resume that skips the batches an interrupted epoch had already trained on.
    """

    def __init__(self, split: Split, transform: Callable, draft_size: int, seed: int = 0) -> None:
        self.paths, self.labels = list(split.items), list(split.labels)
        self.transform, self.draft_size, self.seed, self.epoch = transform, draft_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            image = load_rgb(self.paths[index], draft_size=self.draft_size)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{self.paths[index]}: cannot read image during training ({exc})") from None
        value = epoch_seed(self.seed, self.epoch) * 1_000_003 + index
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):  # timm draws from `random`, torchvision from torch
            torch.manual_seed(value)
            random.seed(value)
            np.random.seed(value % (2**32))
            try:
                return self.transform(image), self.labels[index]
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)


def image_train_data(split: Split, preprocessing: Preprocessing, config: RunConfig, n_classes: int,
                     defaults: Mapping[str, Any] = FINETUNE_DEFAULTS) -> TrainData:
    workers = config.workers if config.workers is not None else loader_workers()
    dataset = TrainImages(split, train_transform(preprocessing, config.augment), preprocessing.resize_size, config.seed)
    mixup = MixupCutmix(config.label_smoothing, n_classes) if config.augment == "strong" else None
    return TrainData(dataset, EpochSampler(split.labels, config.seed, config.balanced_sampler), list(split.labels),
                     defaults=defaults, workers=workers, batch_transform=mixup, deterministic=config.augment == "none",
                     items=list(split.items))


class MixupCutmix:
    """timm's mixup/cutmix on a batch: (images, labels) -> (mixed images, soft targets). It pairs each image
    with its mirror in the batch, so an odd-sized batch (a last one) stays unmixed: targets None."""

    def __init__(self, label_smoothing: float, n_classes: int) -> None:
        from timm.data import Mixup

        self.mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=label_smoothing, num_classes=n_classes)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if len(labels) % 2:
            return images, None
        return self.mixup(images, labels)


# --augment affine: rotation, shift and zoom, never a flip, for classes whose orientation matters (digits, text,
# documents). Zooming out to 0.7 also covers a change of framing: USPS digits fill their frame, MNIST's sit in
# 20 of 28 px (USPS -> MNIST source-only, Lite0 @ 64 px: see bench/adapt.py).
AFFINE_DEGREES, AFFINE_SHIFT, AFFINE_SCALE = 15.0, 0.1, (0.7, 1.1)


def border_fill(image: torch.Tensor) -> list[float]:
    """Per-channel median of a CHW image's outermost pixels: what the area a warp uncovers is painted with
    (black for digits on black, white for scanned pages), so the warp adds no frame of its own."""
    border = torch.cat([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], dim=1)
    return border.median(dim=1).values.tolist()


def affine_transform(plain: Callable) -> Callable:
    from torchvision.transforms import RandomAffine, functional  # import cost: only runs that augment pay it

    def warp(image):
        tensor = plain(image)
        angle, shift, scale, shear = RandomAffine.get_params(
            [-AFFINE_DEGREES, AFFINE_DEGREES], [AFFINE_SHIFT, AFFINE_SHIFT], list(AFFINE_SCALE), None,
            [tensor.shape[-1], tensor.shape[-2]])  # (width, height), as torchvision's own call passes it
        return functional.affine(tensor, angle, list(shift), scale, list(shear),
                                 functional.InterpolationMode.BILINEAR, border_fill(tensor))

    return warp


def train_transform(preprocessing: Preprocessing, augment: str) -> Callable:
    """PIL image -> float CHW in [0, 1]; normalisation stays inside the model."""
    def plain(image):
        # torch.tensor copies: the array is a read-only view of Pillow's buffer, which from_numpy warns about
        return torch.tensor(preprocessing.resize_and_crop(image)).permute(2, 0, 1).float().div(255.0)

    if augment == "none":
        return plain
    if augment == "affine":
        return affine_transform(plain)
    from timm.data import create_transform

    return create_transform(
        preprocessing.input_size, is_training=True, interpolation=preprocessing.interpolation,
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), hflip=0.5, color_jitter=0.0,
        auto_augment="rand-m9-mstd0.5-inc1" if augment == "strong" else None,
    )


def decode_split(split: Split, preprocessing: Preprocessing, batch_size: int,
                 workers: int | None) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """A split decoded once with the evaluation transform (uint8 NHWC), as prediction sees it."""
    images, keep, failed = [], [], []
    for batch in decode_batches(split.items, preprocessing, batch_size, workers):
        images.append(batch.images)
        keep.extend(batch.indices)
        failed.extend((split.items[i], reason) for i, reason in batch.failed)
    size = preprocessing.input_size
    array = np.concatenate(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return array, np.asarray(split.labels, dtype=np.int64)[keep], failed


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray, batch_size: int, accelerator: "Accelerator | None" = None,
                  ) -> np.ndarray:
    """Softmax outputs for uint8 NHWC ``images`` (every process computes all rows; small val/test sets)."""
    was_training = model.training
    model.eval()
    device = accelerator.device if accelerator is not None else torch.device("cpu")
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start:start + batch_size]).to(device)
        with (accelerator.autocast() if accelerator is not None else torch.autocast("cpu", enabled=False)):
            out.append(torch.softmax(model(batch).float(), dim=1).cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """Float NCHW in [0, 1] (the training transform's output) back to the engines' uint8 NHWC input."""
    return images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


class FrozenEngine:
    """The untouched pretrained backbone on the cached feature engine, for head-only phases.

    Takes a training batch (float NCHW in [0, 1]) or decoded images (uint8 NHWC, as validation is held);
    the engine is opened on the first call, so a run without a head-only phase never exports one."""

    def __init__(self, open_engine: Callable[[], Callable[[np.ndarray], np.ndarray]], batch_size: int) -> None:
        self.open_engine, self.engine, self.batch_size = open_engine, None, batch_size

    def __call__(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        if self.engine is None:
            self.engine = self.open_engine()
        images = images if isinstance(images, np.ndarray) else to_uint8_nhwc(images)
        if len(images) <= self.batch_size:
            return self.engine(images)
        # in batches: ONNX Runtime's arena keeps the largest batch's activations for the session's life (the
        # 153 validation images at once took 1 GB more for the rest of a hymenoptera fine-tune)
        return np.concatenate([self.engine(images[start:start + self.batch_size])
                               for start in range(0, len(images), self.batch_size)])

    def release(self) -> None:
        """Close the engine (its arena with it) while the backbone trains; the next call opens it again."""
        self.engine = None

