"""Images between arrays and files: one way to quantise to 8 bits, one encoder. No torch here:
the fetch and shard stages use it, and importing torch costs them seconds (tensors:
`colorray.color.to_uint8`)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# colorize's --format choices -> Pillow format names
FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "tif": "TIFF"}


def array_to_uint8(a: np.ndarray) -> np.ndarray:
    """A float array in [0, 1] (any shape) -> uint8, rounded to nearest (ties to even)."""
    return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, fmt: str = "png", **options) -> bytes:
    """(H, W, 3) uint8 -> the bytes of an image file in `fmt` (a key of FORMATS)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=FORMATS[fmt], **options)
    return buf.getvalue()
