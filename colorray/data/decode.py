"""Defensive image decoding: any file in, an 8-bit RGB array or a named reason out.

Handles what real photo collections contain: zero-byte and truncated files, non-images,
CMYK JPEGs, 16-bit PNG/TIFF, palette images (with transparency), alpha channels (composited
on white, as a print would show them) and EXIF orientation.

Hostile files are refused with a reason, never decoded: only the formats listed in FORMATS
are opened (a `photo.jpg` holding PostScript never reaches Ghostscript), the size in the
header is checked before any pixel is decoded (`max_pixels`), animated and multi-frame files
are refused, and any other decoder failure of one file is that file's `BadImage`.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from colorray.images import array_to_uint8

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
# The Pillow formats colorray opens (JPEG includes MPO, the multi-picture JPEG many cameras
# write). Every other Pillow plugin (EPS through Ghostscript, PSD, ICNS, ...) is never tried.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
# Pixels one image may have (Pillow's own bomb limit): its decoded RGB takes 3 bytes a pixel.
MAX_PIXELS = 89_478_485
# Bytes one image file may have (a 16-bit TIFF scan of a large print is a few hundred MB).
MAX_FILE_BYTES = 1 << 30
# Longest over shortest side the training crop accepts: a 1 x 2,000,000 strip is no photo.
MAX_ASPECT = 20.0

# File signatures of the formats we read: a file that has one but does not decode is
# reported as corrupt, not as "not an image".
SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP",
              b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"RIFF": "WEBP"}
# Formats Pillow could open but colorray refuses, named in the reason.
REFUSED_SIGNATURES = {b"%!PS": "PostScript/EPS", b"\xc5\xd0\xd3\xc6": "PostScript/EPS", b"8BPS": "Photoshop PSD",
                      b"%PDF": "PDF", b"icns": "ICNS", b"\x00\x00\x01\x00": "ICO"}


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
    return Image.fromarray(array_to_uint8(a), "L")


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


def _check_header(img: Image.Image, max_pixels: int) -> None:
    """Refuse by what the header says, before a single pixel is decoded."""
    w, h = img.size
    if w < 1 or h < 1:
        raise BadImage(f"unusable image size {w}x{h} (a zero dimension)")
    if w * h > max_pixels:
        raise BadImage(f"{w}x{h} is {w * h / 1e6:.0f} megapixels, over the limit of {max_pixels / 1e6:.0f}")
    # MPO's extra frames are the camera's previews of the same photo: its first frame is the photo.
    if img.format != "MPO" and (getattr(img, "is_animated", False) or getattr(img, "n_frames", 1) > 1):
        raise BadImage(f"animated or multi-frame {img.format} ({getattr(img, 'n_frames', '?')} frames): "
                       "colorray reads single images only")


def _unidentified(data: bytes) -> BadImage:
    refused = next((f for sig, f in REFUSED_SIGNATURES.items() if data.startswith(sig)), None)
    if refused is not None:
        return BadImage(f"{refused} file, not an accepted image format ({', '.join(FORMATS)})")
    fmt = next((f for sig, f in SIGNATURES.items() if data.startswith(sig)), None)
    if fmt is not None:
        return BadImage(f"corrupt image ({fmt} signature, but it does not decode)")
    return BadImage("not an image (unrecognised format)")


def image_size(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the header alone, refused as decode_image would refuse it."""
    if len(data) == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            _check_header(img, max_pixels)
            return img.size
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except Image.DecompressionBombError as e:
        raise BadImage(f"too large to decode safely ({e})") from None
    except Exception as e:
        raise BadImage(f"corrupt image header ({type(e).__name__}: {e})") from None


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes to (H, W, 3) uint8 RGB, or raise BadImage with the reason."""
    if len(data) == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                _check_header(img, max_pixels)
                img.load()  # forces the full decode: truncation shows up here
                arr = to_rgb(img)
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(f"corrupt or truncated image ({e})") from None
    except MemoryError:
        raise BadImage("out of memory while decoding it") from None
    except Exception as e:  # any other decoder failure is this file's problem, not the stage's
        raise BadImage(f"cannot decode it ({type(e).__name__}: {e})") from None
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise BadImage(f"unusable image shape {arr.shape}")
    return arr


def resize_center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """The centred square of the image, resized (area-aware) to size x size.

    The square is cut in source coordinates first (`box=`), so memory is bounded by the
    output, whatever the input's shape; an image more elongated than MAX_ASPECT is refused."""
    h, w = rgb.shape[:2]
    if max(h, w) > MAX_ASPECT * min(h, w):
        raise BadImage(f"aspect ratio {w}:{h} is more elongated than 1:{MAX_ASPECT:g}; not a photo to crop")
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = Image.fromarray(rgb)
    if side == size:
        return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    # reducing_gap makes large downscales fast (JPEG draft-like box prefilter) yet sharp.
    out = img.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side),
                     reducing_gap=3.0)
    return np.asarray(out, dtype=np.uint8)


def mean_chroma(rgb: np.ndarray) -> float:
    """Mean Lab chroma sqrt(a^2 + b^2) of an RGB uint8 image (0 for a gray image)."""
    from skimage.color import rgb2lab

    lab = rgb2lab(rgb)
    return float(np.hypot(lab[..., 1], lab[..., 2]).mean())
