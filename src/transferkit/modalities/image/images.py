"""Decoding images into RGB the same way everywhere: training, caching, prediction and export checks."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# torchvision's ImageFolder extensions: a .gif in a photo folder is usually a placeholder, not a sample.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})

# Pillow warns above ~89 MP and raises above twice that; we make every oversized image an error.
MAX_IMAGE_PIXELS = 89_478_485
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits by the image's own range instead of clipping at 255.
        array = np.asarray(image, dtype=np.float32)
        high = float(array.max()) or 1.0
        image = Image.fromarray(np.clip(array * (255.0 / high), 0, 255).astype(np.uint8), mode="L")
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency on white, the way a viewer shows it, instead of on black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_rgb(path: str | Path, draft_size: int | None = None) -> Image.Image:
    """Open an image file as RGB, honouring EXIF orientation.

    ``draft_size`` lets JPEG decode at a reduced DCT scale that is still at least that many pixels on the
    short side, which is several times faster than a full decode followed by a downscale.
    Raises ``OSError``/``ValueError`` (or ``Image.DecompressionBombError``) for unreadable files.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            if draft_size and image.format == "JPEG":
                width, height = image.size
                scale = min(width, height) / draft_size
                if scale >= 2:
                    image.draft("RGB", (int(width / scale) + 1, int(height / scale) + 1))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
