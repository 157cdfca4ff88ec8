"""sRGB <-> CIE Lab in torch, batched, on any device; the same formulas as skimage.color.

Conventions (pix2pix colorization and the studies): the networks see L/50 - 1 and ab/110,
both in about [-1, 1]. Images travel as uint8 RGB (N, H, W, 3) until they reach the device
that trains on them; `rgb_uint8_to_lab` turns them into the normalised (L, ab) pair there.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# skimage.color: sRGB (D65) -> XYZ matrix and the D65 / 2-degree reference white.
XYZ_FROM_RGB = torch.tensor([[0.412453, 0.357580, 0.180423],
                             [0.212671, 0.715160, 0.072169],
                             [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
RGB_FROM_XYZ = torch.linalg.inv(XYZ_FROM_RGB)
WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
L_SCALE, AB_SCALE = 50.0, 110.0

_EPS, _KAPPA = 0.008856, 7.787  # CIE constants exactly as skimage writes them


@functools.lru_cache(maxsize=8)
def _srgb_lut(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The 256 linearised sRGB values: uint8 images are linearised by a lookup, not pow()."""
    v = torch.arange(256, dtype=torch.float64) / 255.0
    lin = torch.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)
    return lin.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=8)
def _xyz_white_conv(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """XYZ_FROM_RGB with the white point divided out, as 1x1 conv weights (3, 3, 1, 1)."""
    return (XYZ_FROM_RGB / WHITE_D65[:, None]).to(device=device, dtype=dtype)[:, :, None, None]


def _f(t: torch.Tensor) -> torch.Tensor:
    """CIE f(t): cube root above the knee, linear below (skimage's constants)."""
    return torch.where(t > _EPS, t.clamp_min(_EPS).pow(1.0 / 3.0), _KAPPA * t + 16.0 / 116.0)


def _xyz_to_lab(xyz: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) XYZ -> Lab; L in [0, 100]."""
    fx, fy, fz = _f(xyz / WHITE_D65.to(xyz).view(1, 3, 1, 1)).unbind(1)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), 1)


def _mix(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 matrix to the channel axis of (N, 3, H, W)."""
    return torch.einsum("ij,njhw->nihw", m.to(x), x)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float sRGB in [0, 1] -> Lab (L in [0, 100], a/b roughly [-110, 110])."""
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).pow(2.4), rgb / 12.92)
    return _xyz_to_lab(_mix(XYZ_FROM_RGB, lin))


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) Lab -> sRGB in [0, 1] (out-of-gamut values clipped, as skimage does)."""
    L, a, b = lab.unbind(1)
    fy = (L + 16.0) / 116.0
    # skimage clips only z at 0 (with a warning) before inverting the cube root.
    f = torch.stack((fy + a / 500.0, fy, (fy - b / 200.0).clamp_min(0.0)), 1)
    t = torch.where(f > 0.2068966, f.pow(3.0), (f - 16.0 / 116.0) / _KAPPA)
    xyz = t * WHITE_D65.to(lab).view(1, 3, 1, 1)
    lin = _mix(RGB_FROM_XYZ, xyz)
    rgb = torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(0.0031308).pow(1 / 2.4) - 0.055, 12.92 * lin)
    return rgb.clamp(0.0, 1.0)


def _uint8_block_to_lab(rgb: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # (N, H, W, 3) uint8 -> linear RGB by lookup, viewed as NCHW in channels_last memory, so the
    # 3x3 colour matrix runs as a 1x1 convolution (oneDNN / cuDNN) instead of a K=3 matmul.
    lin = torch.take(_srgb_lut(rgb.device, dtype), rgb.long()).permute(0, 3, 1, 2)
    t = F.conv2d(lin, _xyz_white_conv(rgb.device, dtype))
    # CIE f(t) without a branch: the linear piece is the cube root's tangent at the knee, so
    # f = min(cbrt(max(t, eps)), linear(t)) (to 3e-7 at the knee; faster than where()).
    linear = t.mul(_KAPPA).add_(16.0 / 116.0)
    fx, fy, fz = torch.minimum(t.clamp_min_(_EPS).pow_(1.0 / 3.0), linear).unbind(1)
    L = fy.mul(116.0 / L_SCALE).sub_(16.0 / L_SCALE + 1.0)
    ab = torch.stack((fx - fy, fy - fz), 1)
    ab[:, 0].mul_(500.0 / AB_SCALE)
    ab[:, 1].mul_(200.0 / AB_SCALE)
    return L.unsqueeze(1), ab


# On CPU, converting 16 images at a time keeps every intermediate in L2 cache: about 2x
# faster than one pass over a 128-image batch (benchmarks/loader.py).
CPU_BLOCK = 16


def rgb_uint8_to_lab(rgb: torch.Tensor, device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W, 3) uint8 RGB -> normalised (L/50 - 1 as (N, 1, H, W), ab/110 as (N, 2, H, W)).

    The uint8 batch is moved first (4x fewer bytes than float) and converted on `device`.
    """
    rgb = rgb.to(device, non_blocking=True) if device is not None else rgb
    if rgb.device.type != "cpu" or len(rgb) <= CPU_BLOCK:
        return _uint8_block_to_lab(rgb, dtype)
    parts = [_uint8_block_to_lab(block, dtype) for block in rgb.split(CPU_BLOCK)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def lab_to_rgb_normalized(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_uint8_to_lab`: normalised (L, ab) -> float sRGB (N, 3, H, W) in [0, 1]."""
    lab = torch.cat(((L + 1.0) * L_SCALE, ab * AB_SCALE), 1)
    return lab_to_rgb(lab.float())


def to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1], channels first (..., 3, H, W) -> 8-bit, channels last (..., H, W, 3)."""
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1)
