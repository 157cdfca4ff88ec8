"""`colorray tune` (DVC stage tune): the Ray Tune sweep of tune.space over Ray Train trials."""

from __future__ import annotations

from pathlib import Path

from colorray.config import load_params, read_yaml
from colorray.data.storage import stage_shards
from colorray.sweep.run import run_sweep


def run(args) -> None:
    base = read_yaml(args.params) or {}
    params = load_params(args.params)
    s = run_sweep(base, params, stage_shards(args.shards, params.data.shards_url), Path(args.root), Path(args.out),
                  init=Path(args.init) if args.init else None)
    if not s.get("enabled", True):
        print(f"tune: tune.enabled is false; wrote an empty {args.out}/best_params.yaml")
        return
    b = s["best"]
    print(f"tune: {s['trials']} trials ({s['completed']} completed, {s['stopped early']} stopped early by {s['scheduler']}, "
          f"{s['error']} failed; {s['trial_iters']} trial iterations in all). Best by {s['metric']}: trial "
          f"{b['trial_id']} with {b['score']:.4g}; MLflow sweep run {s['parent_run_id']}; see {args.out}/")
