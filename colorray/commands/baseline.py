"""`colorray baseline` (DVC stage baseline): the reconstruction-only generator."""

from __future__ import annotations

from pathlib import Path

from colorray.baseline import train_baseline
from colorray.config import tuned_params
from colorray.data.storage import stage_shards


def run(args) -> None:
    params = tuned_params(args.params, Path(args.best) if args.best else None)
    print(f"baseline: training the reconstruction-only generator for {params.train.iters} iterations "
          f"(progress every 25)", flush=True)
    s = train_baseline(params, stage_shards(args.shards, params.data.shards_url), Path(args.out),
                       log=lambda m: print(f"baseline: {m}", flush=True), work=Path(args.work) if args.work else None,
                       init=Path(args.init) if args.init else None)
    print(f"baseline: reconstruction-only generator, {s['iterations']} iterations in {s['precision'].label} "
          f"-> {args.out}; val/l1 {s['val/l1']:.4f}, val/delta_cf {s['val/delta_cf']:.2f}")
