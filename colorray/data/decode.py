"""Defensive image decoding: any file in, an 8-bit RGB array or a named reason out.

Handles what real photo collections contain: zero-byte and truncated files, non-images,
CMYK JPEGs, 16-bit PNG/TIFF, palette images (with transparency), alpha channels (composited
on white, as a print would show them) and EXIF orientation.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


# File signatures of the formats we read: a file that has one but does not decode is
# reported as corrupt, not as "not an image".
SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP",
              b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"RIFF": "WEBP"}


class BadImage(ValueError):
    """An input that cannot be used; `str(e)` is the reason recorded in the manifest."""


def _to_8bit(img: Image.Image) -> Image.Image:
    """Map 16/32-bit integer and float single-channel modes to 8-bit 'L' by their range."""
    a = np.asarray(img)
    if img.mode.startswith("I;16") or (img.mode == "I" and a.max(initial=0) > 255):
        a = a.astype(np.float64) / (65535.0 if a.max(initial=0) > 255 else 255.0)
    elif img.mode == "F":
        a = np.clip(a, 0.0, None) / max(float(a.max(initial=0)), 1e-12)
    else:
        a = a.astype(np.float64) / 255.0
    return Image.fromarray(np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8), "L")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> np.ndarray:
    """Convert an opened PIL image of any mode to an (H, W, 3) uint8 array, EXIF-upright."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = _flatten_alpha(img)
    elif img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.asarray(img, dtype=np.uint8)


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes to (H, W, 3) uint8 RGB, or raise BadImage with the reason."""
    if len(data) == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()  # forces the full decode: truncation shows up here
                arr = to_rgb(img)
    except UnidentifiedImageError:
        fmt = next((f for sig, f in SIGNATURES.items() if data.startswith(sig)), None)
        if fmt is not None:
            raise BadImage(f"corrupt image ({fmt} signature, but it does not decode)") from None
        raise BadImage("not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(f"corrupt or truncated image ({e})") from None
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise BadImage(f"unusable image shape {arr.shape}")
    return arr


def resize_center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize so the short side is `size` (area-aware), then center-crop to size x size."""
    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    img = Image.fromarray(rgb)
    if (nh, nw) != (h, w):
        # reducing_gap makes large downscales fast (JPEG draft-like box prefilter) yet sharp.
        img = img.resize((nw, nh), Image.Resampling.LANCZOS, reducing_gap=3.0)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def mean_chroma(rgb: np.ndarray) -> float:
    """Mean Lab chroma sqrt(a^2 + b^2) of an RGB uint8 image (0 for a gray image)."""
    from skimage.color import rgb2lab

    lab = rgb2lab(rgb)
    return float(np.hypot(lab[..., 1], lab[..., 2]).mean())
