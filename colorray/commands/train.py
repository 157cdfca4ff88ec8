"""`colorray train` (DVC stage train): Ray Train data-parallel training, logged to MLflow."""

from __future__ import annotations

from pathlib import Path

from colorray.config import tuned_params
from colorray.data.storage import stage_shards
from colorray.train.distributed import fit


def run(args) -> None:
    best = Path(args.best) if args.best else None
    params = tuned_params(args.params, best)
    if best and best.exists():
        print(f"train: parameters from {args.params} with the tuned values of {best}")
    summary = fit(params, stage_shards(args.shards, params.data.shards_url), Path(args.root), Path(args.models), Path(args.metrics),
                  resume=params.train.resume, init=Path(args.init) if args.init else None)
    m = summary["metrics"]
    print(f"train: {summary['iterations']} iterations, MLflow run {summary['run_id']}, model "
          f"{summary['model_uri']}; val/l1 {m.get('val/l1', float('nan')):.4f}, "
          f"val/colorfulness {m.get('val/colorfulness', float('nan')):.2f} "
          f"(truth {m.get('val/colorfulness_true', float('nan')):.2f})")
