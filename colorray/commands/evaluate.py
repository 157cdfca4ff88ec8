"""`colorray evaluate` (DVC stage evaluate): measure the models and baselines, write eval/,
register the winner."""

from __future__ import annotations

from pathlib import Path

from colorray.config import tuned_params
from colorray.data.storage import stage_shards
from colorray.evaluate import evaluate


def run(args) -> None:
    params = tuned_params(args.params, Path(args.best) if args.best else None)
    s = evaluate(params, stage_shards(args.shards, params.data.shards_url), Path(args.generator), Path(args.baseline),
                 Path(args.classifier), Path(args.out), Path(args.root), Path(args.loss_curves),
                 init=Path(args.init) if args.init else None)
    for name, m in s["models"].items():
        shown = ", ".join(f"{k} {m[k]:.4g}" for k in ("fid", "lpips", "ssim", "psnr", "delta_cf", "accuracy", "cim")
                          if k in m)
        print(f"evaluate: {name:15s} {shown}")
    print(f"evaluate: {s['selection']['reason']}; report: {args.out}/report.html")
