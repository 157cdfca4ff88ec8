"""Image-quality metrics shared by training and evaluation; registry.py has every metric and
its direction, fid.py and classifier.py the ones that need a network."""

from __future__ import annotations

import torch


def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler & Süsstrunk (2003) colorfulness of (N, 3, H, W) RGB in [0, 1], per image.

    On 0-255 values: rg = R - G, yb = (R + G)/2 - B,
    CF = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2). 0 for gray images.
    """
    r, g, b = (rgb.float() * 255.0).unbind(1)
    rg, yb = r - g, 0.5 * (r + g) - b
    std = torch.sqrt(rg.flatten(1).var(1, unbiased=False) + yb.flatten(1).var(1, unbiased=False))
    mean = torch.sqrt(rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2)
    return std + 0.3 * mean
