"""The baseline stage: study 001's configuration S, the reconstruction-only generator.

The train stage's parameters (tuned values included) with `gan.adv_weight = 0`: the same
network, data, optimizer, batch and iterations, without a discriminator. The evaluate stage
measures the GAN against it (and against gray).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from colorray.config import Params, parse_params
from colorray.models.files import save_generator
from colorray.train.loop import train_local, validate


def baseline_params(params: Params) -> Params:
    raw = params.model_dump(mode="json")
    raw["gan"]["adv_weight"] = 0.0
    return parse_params(raw, origin="the baseline's parameters")


def train_baseline(params: Params, shards: str | Path, out: Path, log: Callable[[str], None] = print,
                   work: Path | None = None, init: Path | None = None) -> dict:
    """Train the reconstruction-only generator in this process and save it to `out`. With
    `work`, its checkpoints stay there and a rerun resumes from them (a run of hours)."""
    bp = baseline_params(params)
    if work is not None:
        trainer = train_local(bp, shards, work, resume=True, log=log, log_every=25, init=init)
    else:
        with tempfile.TemporaryDirectory(prefix="colorray-baseline-") as tmp:
            trainer = train_local(bp, shards, tmp, resume=False, log=log, log_every=25, init=init)
    val, _ = validate(trainer.G, shards, "cpu")
    # The gain the generator applies: a fine-tuning's is its starting model's (train.init_from).
    bp = bp.model_copy(update={"model": bp.model.model_copy(update={"chroma_gain": trainer.G.chroma_gain})})
    save_generator(trainer.G, bp, trainer.iter, out, kind="reconstruction", val=val,
                   precision=trainer.precision.tags())
    return {"iterations": trainer.iter, "precision": trainer.precision, **val}
