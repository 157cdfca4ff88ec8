"""Colorize photos with an exported generator (`colorray export`) and ONNX Runtime, with numpy,
Pillow and onnxruntime only: no torch. This file imports nothing else of colorray's, so it may
be copied alone next to the .onnx file:

    pip install onnxruntime numpy pillow
    python onnx_runtime.py g.onnx old_photo.jpg colorized.png [--render-size 256]

or, with colorray installed, `python -m colorray.onnx_runtime ...` (`colorray colorize
--runtime onnx --model g.onnx` runs the same file with the rest of colorray's pipeline).

What the graph expects and returns is written in the model's metadata (key "colorray") and in
the sidecar g.onnx.json (colorray.export):

- input "L": (N, 1, H, W) float32, L / 50 - 1, where L is the CIE L* (D65 white, 0..100) of
  the sRGB photo; H and W multiples of "stride";
- output "ab": (N, 2, H, W) float32, a* / 110 and b* / 110.

The steps are those of colorray.colorize: the photo's own L at full resolution; the generator
sees it resized (bilinear, antialiased) to the render shape (the training size square by
default, or short side N with the aspect kept); the predicted ab is upsampled (bilinear) to the
photo's size and joined with the full-resolution L, then converted to sRGB.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

METADATA_KEY = "colorray"
ONNX_FORMAT = "colorray-onnx-1"

# sRGB (D65) <-> XYZ and the D65 white, as skimage.color and colorray.color write them.
XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]])
RGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_RGB)
WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_EPS, _KAPPA = 0.008856, 7.787


def srgb_to_L(rgb: np.ndarray, l_scale: float = 50.0) -> np.ndarray:
    """(H, W, 3) uint8 sRGB -> (H, W) float32 normalised lightness L / l_scale - 1."""
    v = np.arange(256) / 255.0
    lut = np.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92).astype(np.float32)
    lin = lut[rgb]
    y = lin @ XYZ_FROM_RGB[1].astype(np.float32)  # Y / Y_white (Y_white = 1)
    fy = np.where(y > _EPS, np.cbrt(np.maximum(y, _EPS)), _KAPPA * y + 16.0 / 116.0)
    return (116.0 * fy - 16.0) / l_scale - 1.0


def lab_to_srgb(L: np.ndarray, ab: np.ndarray, l_scale: float = 50.0, ab_scale: float = 110.0) -> np.ndarray:
    """Normalised L (H, W) and ab (2, H, W) -> (H, W, 3) uint8 sRGB (out of gamut clipped)."""
    fy = ((L + 1.0) * l_scale + 16.0) / 116.0
    f = np.stack([fy + ab[0] * ab_scale / 500.0, fy, np.maximum(fy - ab[1] * ab_scale / 200.0, 0.0)], -1)
    t = np.where(f > 0.2068966, f ** 3, (f - 16.0 / 116.0) / _KAPPA)
    lin = (t * WHITE_D65.astype(np.float32)) @ RGB_FROM_XYZ.T.astype(np.float32)
    rgb = np.where(lin > 0.0031308, 1.055 * np.maximum(lin, 0.0031308) ** (1 / 2.4) - 0.055, 12.92 * lin)
    return np.clip(np.rint(np.clip(rgb, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)


def resize(plane: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """One float32 plane resized bilinearly (antialiased when shrinking), as torch's
    F.interpolate(mode="bilinear", antialias=True) does."""
    image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))  # mode "F"
    return np.asarray(image.resize((cols, rows), Image.Resampling.BILINEAR))


def render_shape(h: int, w: int, image_size: int, render_size: int | None, stride: int) -> tuple[int, int]:
    """As colorray.colorize.render_shape: the training square, or short side N rounded to the stride."""
    if render_size is None:
        return image_size, image_size
    scale = render_size / min(h, w)
    return tuple(max(stride, round(side * scale / stride) * stride) for side in (h, w))


class OnnxColorizer:
    """An exported generator in an ONNX Runtime session, with what it needs to know."""

    def __init__(self, path: str | Path, threads: int | None = None):
        path = Path(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types: not an ONNX model, damaged
            raise ValueError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        sidecar = path.with_name(path.name + ".json")
        if meta is None and sidecar.is_file():
            meta = sidecar.read_text()
        if meta is None:
            raise ValueError(f"{path}: not exported by colorray (no '{METADATA_KEY}' metadata and no {sidecar.name})")
        self.info = json.loads(meta)
        if self.info.get("format") != ONNX_FORMAT:
            raise ValueError(f"{path}: unknown export format {self.info.get('format')!r} (expected {ONNX_FORMAT})")
        self.input, self.output = self.info["input"]["name"], self.info["output"]["name"]
        self.stride, self.image_size = int(self.info["stride"]), int(self.info["image_size"])
        self.l_scale, self.ab_scale = float(self.info["input"]["L_scale"]), float(self.info["output"]["ab_scale"])

    def predict(self, L: np.ndarray) -> np.ndarray:
        """(N, 1, h, w) normalised L at the render shape -> (N, 2, h, w) normalised ab."""
        return self.session.run([self.output], {self.input: np.ascontiguousarray(L, dtype=np.float32)})[0]

    def colorize_ab(self, rgb: np.ndarray, render_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 -> (its normalised L (H, W), the predicted ab (2, H, W) at its size)."""
        rgb = np.asarray(rgb)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] < 3:
            raise ValueError(f"expected an (H, W) or (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
        L = srgb_to_L(rgb[..., :3], self.l_scale)
        h, w = L.shape
        rows, cols = render_shape(h, w, self.image_size, render_size, self.stride)
        small = np.clip(resize(L, rows, cols), -1.0, 1.0)
        ab = self.predict(small[None, None])[0]
        return L, np.stack([resize(plane, h, w) for plane in ab])

    def colorize(self, rgb: np.ndarray, render_size: int | None = None) -> np.ndarray:
        """(H, W) or (H, W, 3) uint8 -> (H, W, 3) uint8 colorized, its own lightness kept."""
        L, ab = self.colorize_ab(rgb, render_size)
        return lab_to_srgb(L, ab, self.l_scale, self.ab_scale)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Colorize a photo with a colorray ONNX export (no torch needed).")
    ap.add_argument("model", help="the .onnx file written by `colorray export`")
    ap.add_argument("photo", help="the photo to colorize (any format Pillow reads)")
    ap.add_argument("out", help="where to write the colorized photo (format from its extension)")
    ap.add_argument("--render-size", type=int, default=None, metavar="N",
                    help="the generator sees the photo at short side N; default: the square it was trained on")
    args = ap.parse_args(argv)
    rgb = np.asarray(Image.open(args.photo).convert("RGB"))
    Image.fromarray(OnnxColorizer(args.model).colorize(rgb, args.render_size)).save(args.out)


if __name__ == "__main__":
    main()
