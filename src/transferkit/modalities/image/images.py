"""Decoding images into RGB the same way everywhere: training, caching, prediction and export checks."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from transferkit.config import MAX_IMAGE_PIXELS

# torchvision's ImageFolder extensions: a .gif in a photo folder is usually a placeholder, not a sample.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # config.py: every image over it is an error
# Resizing the short side to the backbone's size multiplies a thin image's pixels by its aspect ratio (a
# 50000x1 PNG became 12800000x256): the resized image is limited too, to 16 MP (48 MB as RGB per thread).
MAX_RESIZED_PIXELS = 4096 * 4096
# Photos are 1:1 to 16:9 (~1.8:1), phone panoramas about 4:1 to 9:1, and a full 360-degree strip at most
# about 12:1; 20:1 passes all of them and refuses only strips of which the centre crop would keep less than
# a twentieth anyway (a scanned receipt or a 1-pixel line is not a photo).
MAX_ASPECT_RATIO = 20.0


class ImageRefused(ValueError):
    """An image that is refused before it is decoded (too many pixels, too thin); its message is the reason."""


# Peak bytes per pixel of turning an image into the model's RGB input (load_rgb and to_rgb below), by the mode
# its header announces, measured (ru_maxrss) on 4000x4000 PNGs: Pillow keeps RGB in 4 bytes a pixel
# and exif_transpose copies it (8); alpha is converted to RGBA and composited on a white RGBA background before
# RGB (24); 16/32-bit greyscale goes through float32 arrays (25); L, P, 1 measured 6.
BYTES_PER_PIXEL = {"RGB": 8, "RGBA": 24, "LA": 24, "PA": 24, "La": 24, "RGBa": 24, "I": 26, "F": 26}
OTHER_MODE_BYTES = 8  # L, P, 1, CMYK, YCbCr, ...: decoded (at most 4 bytes) + RGB (4)


def image_cost(width: int, height: int, mode: str, transparency: bool = False) -> int:
    """The bytes decoding an image of this header takes at its peak (a palette image with a transparent colour
    is composited like one with alpha)."""
    per_pixel = BYTES_PER_PIXEL.get("RGBA" if transparency and mode == "P" else mode,
                                    26 if mode.startswith("I;16") else OTHER_MODE_BYTES)
    return width * height * per_pixel


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def check_image_size(width: int, height: int, short_side: int | None = None) -> None:
    """Refuse an image whose header size would need too much memory, decoded or resized (``ImageRefused``)."""
    if width < 1 or height < 1:
        raise ImageRefused(f"{width}x{height} pixels: the image is empty")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageRefused(f"{width}x{height} pixels is over the limit of {MAX_IMAGE_PIXELS / 1e6:.0f} MP; "
                           "downscale the image")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageRefused(f"{width}x{height} pixels: aspect ratio {ratio:.0f}:1 is over {MAX_ASPECT_RATIO:.0f}:1; "
                           "crop the image")
    if short_side and short_side * short_side * ratio > MAX_RESIZED_PIXELS:
        raise ImageRefused(f"{width}x{height} pixels: resized to {short_side} on its short side it would be "
                           f"{short_side * short_side * ratio / 1e6:.0f} MP (limit {MAX_RESIZED_PIXELS / 1e6:.0f} "
                           "MP); crop the image or use a smaller --image-size")


def _scaled_to_8_bits(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float greyscale as 8 bits, scaled by the image's own range: clipping at 255
    (what ``convert`` does) turns a 16-bit image white and a float one in [0, 1] black."""
    array = np.asarray(image, dtype=np.float32)
    finite = array[np.isfinite(array)]
    low = min(0.0, float(finite.min())) if finite.size else 0.0  # negative floats: shift by the minimum
    high = float(finite.max()) if finite.size else 0.0
    span = (high - low) or 1.0
    scaled = np.nan_to_num((array - low) * (255.0 / span), nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _scaled_to_8_bits(image)
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency on white, the way a viewer shows it, instead of on black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_rgb(path: str | Path, draft_size: int | None = None) -> Image.Image:
    """Open an image file as RGB, honouring EXIF orientation.

    ``draft_size`` is the short side the image will be resized to: it is checked against the size limits
    (from the header, before any pixel is decoded), and lets JPEG decode at a reduced DCT scale that is still
    at least that many pixels on the short side, several times faster than a full decode and a downscale.
    Raises ``ImageRefused`` for images over the limits, ``OSError``/``ValueError`` for unreadable files.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            opened = Image.open(path)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ImageRefused(f"{exc}".split(",")[0] + "; downscale the image") from None
        with opened as image:
            width, height = image.size
            check_image_size(width, height, draft_size)
            if draft_size and image.format == "JPEG":
                scale = min(width, height) / draft_size
                if scale >= 2:
                    image.draft("RGB", (int(width / scale) + 1, int(height / scale) + 1))
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
