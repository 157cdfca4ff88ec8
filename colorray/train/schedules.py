"""Learning-rate schedules as pure functions of the iteration (nanoGPT's get_lr style)."""

from __future__ import annotations

import math


def lr_factor(schedule: str, it: int, iters: int, decay_start: float = 0.5) -> float:
    """Multiplier of the base learning rate at generator iteration `it` of `iters`.

    constant: 1. linear (pix2pix): 1 for the first `decay_start` of the run, then linearly to
    0. cosine (study 003): cosine annealing from 1 to 1/10.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        start = decay_start * iters
        return 1.0 if it < start else max(0.0, 1.0 - (it - start) / max(1.0, iters - start))
    if schedule == "cosine":
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(it, iters) / iters))
    raise ValueError(f"unknown lr schedule {schedule!r}")
