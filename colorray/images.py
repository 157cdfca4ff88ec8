"""Images between tensors, arrays and files: one way to quantise to 8 bits, one encoder."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

# colorize's --format choices -> Pillow format names
FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "tif": "TIFF"}


def to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1], channels first (..., 3, H, W) -> 8-bit, channels last (..., H, W, 3)."""
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1)


def array_to_uint8(a: np.ndarray) -> np.ndarray:
    """A float array in [0, 1] (any shape) -> uint8, rounded to nearest (ties to even)."""
    return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, fmt: str = "png", **options) -> bytes:
    """(H, W, 3) uint8 -> the bytes of an image file in `fmt` (a key of FORMATS)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=FORMATS[fmt], **options)
    return buf.getvalue()
