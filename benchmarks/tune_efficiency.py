"""Search efficiency: a small full grid vs ASHA + TPE over the same space (the tune stage).

    python benchmarks/tune_efficiency.py [--iters 60] [--samples 8] [--seed 0] [--image-size 64]
                                         [--schedulers asha,sha] [--out bench-tune]

Runs the real tune stage (`colorray.sweep.run.run_sweep`) on the embedded skimage shards
(fetched and sharded into --out): every point of a grid (WGAN: lambda x clip x n_critic) with no
early stopping; then Optuna TPE with --samples trials over the same values under each of
--schedulers (Ray's asynchronous ASHA, synchronous successive halving: the same rungs); then the
grid's best point with two more seeds, to measure the noise of the ranking metric. Sweeps that
already finished in --out (same parameters and code) are read back, not run again. Compute is
counted as trial-steps (generator iterations actually run, stopped trials included) and as
images processed (iterations x batch x critic steps). Not part of `make test`: it runs for a
quarter of an hour or more on 2 cores.

It also prints how well each report of the grid's trials predicts their final ranking
(Spearman's rho between the metric at that iteration and at the end, and where the final
winner stood): ASHA can only find the grid's best if an early rung already ranks trials the
way the end does. `--analyze` prints that again from an earlier run's --out folder, training
nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

from colorray.config import DataParams, parse_params
from colorray.data.shards import write_shards
from colorray.data.sources import fetch_source
from colorray.sweep.run import run_sweep

# The same values for both searches (a grid needs discrete ones): WGAN trials, so that the
# weight clip applies, over lambda, the clip and n_critic; 3 x 2 x 2 = 12 grid points. Batch
# and dataset size stay fixed here to keep the grid affordable on 2 cores.
SPACE = {
    "gan.objective": {"choice": ["wgan"]},
    "gan.l1_weight": {"choice": [10, 100, 300]},
    "gan.clip": {"choice": [0.005, 0.05]},
    "gan.n_critic": {"choice": [1, 2]},
}
FIXED = {"train": {"batch_size": 16}, "data": {"dataset_size": 1024}}


def images(row: dict) -> int:
    """Images a trial processed: iterations x batch x critic steps per iteration."""
    return int(row["iters_run"]) * FIXED["train"]["batch_size"] * int(row.get("knob/gan.n_critic") or 1)


def rung_agreement(rows: list[dict], tracking_uri: str, metric: str) -> list[dict]:
    """For each iteration at which the grid's trials reported: Spearman's rho between their
    metric there and at their last report, and the final winner's rank there (1 = best;
    lower metric is better). Reads the metric curves from the trials' MLflow runs."""
    from mlflow import MlflowClient
    from scipy.stats import spearmanr

    client = MlflowClient(tracking_uri)
    curves = [{m.step: m.value for m in client.get_metric_history(r["mlflow_run_id"], metric)} for r in rows]
    final = [c[max(c)] for c in curves]
    winner = min(range(len(final)), key=final.__getitem__)
    out = []
    for step in sorted(set.intersection(*(set(c) for c in curves))):
        at = [c[step] for c in curves]
        rank = 1 + sum(v < at[winner] for v in at)
        out.append({"iter": step, "rho": float(spearmanr(at, final).statistic), "winner_rank": rank})
    return out


def print_agreement(agreement: list[dict], trials: int) -> None:
    print(f"\nhow each report of the grid's {trials} trials predicts their final ranking:")
    print("| iteration | Spearman rho with the final values | the final winner's rank there |")
    print("|---|---|---|")
    for a in agreement:
        print(f"| {a['iter']} | {a['rho']:+.2f} | {a['winner_rank']} of {trials} |")


def analyze(root: Path, seed: int) -> None:
    import csv

    result = json.loads((root / f"tune_efficiency-seed{seed}.json").read_text())
    with open(root / "grid" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    print_agreement(rung_agreement(rows, f"sqlite:///{root / 'mlflow.db'}", result["metric"]), len(rows))


def sweep(base: dict, shards: Path, root: Path, name: str, **tune) -> tuple[dict, float]:
    raw = copy.deepcopy(base)
    raw["tune"] = {**raw["tune"], **tune}
    start = time.perf_counter()
    summary = run_sweep(raw, parse_params(raw), shards, root, root / name, log=print)
    return summary, time.perf_counter() - start


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=60, help="generator iterations of an unstopped trial")
    ap.add_argument("--samples", type=int, default=8, help="ASHA + TPE trials")
    ap.add_argument("--seed", type=int, default=0, help="TPE's seed (tune.seed)")
    ap.add_argument("--schedulers", default="asha,sha",
                    help="tune.scheduler values to run TPE with (asha: Ray's asynchronous ASHA; sha: synchronous "
                         "successive halving), comma-separated")
    ap.add_argument("--image-size", type=int, default=64, help="data.image_size (smaller: faster iterations)")
    ap.add_argument("--out", default="bench-tune", help="work folder (shards, MLflow store, Ray results)")
    ap.add_argument("--analyze", action="store_true", help="only print the rung agreement of an earlier run in --out")
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    root = Path(args.out).resolve()
    if args.analyze:
        return analyze(root, args.seed)
    shards = root / "shards"
    data = DataParams(image_size=args.image_size)
    if not (shards / "manifest.json").exists():
        fetch_source(data, root / "raw", root / "dl")
        write_shards(data, root / "raw", shards, progress=False)
    report = max(1, args.iters // 6)
    base = {**copy.deepcopy(FIXED), "loader": {"num_workers": 0}, "ray": {"storage_path": str(root / "ray")},
            "tune": {"iters": args.iters, "report_every": report, "grace_iters": report,
                     "max_concurrent_trials": 2, "num_workers": 1, "cpus_per_worker": 1, "space": SPACE}}
    base["data"] = {**base["data"], "image_size": args.image_size}

    grid, grid_s = sweep(base, shards, root, "grid", search="grid", scheduler="none")
    searches = {}  # scheduler -> (summary, seconds): TPE with the same seed, trials and rungs
    for scheduler in args.schedulers.split(","):
        searches[scheduler] = sweep(base, shards, root, f"{scheduler}-tpe-seed{args.seed}", search="optuna", scheduler=scheduler,
                                    num_samples=args.samples, reduction_factor=3, seed=args.seed)
    # Noise: the grid's best point trained with other seeds.
    best = grid["best"]
    noise_base = copy.deepcopy(base)
    for key in SPACE:
        value = best.get("knob/" + key, "")
        if value != "":  # "" = not sampled for this objective
            section, field = key.split(".")
            noise_base.setdefault(section, {})[field] = value
    noise, _ = sweep(noise_base, shards, root, "noise", search="grid", scheduler="none",
                     space={"train.seed": {"choice": [0, 1, 2]}})
    seed_scores = [float(r["score"]) for r in noise["rows"]]
    noise_std = statistics.stdev(seed_scores)

    def compute(rows):
        return sum(int(r["iters_run"]) for r in rows), sum(images(r) for r in rows)

    def knobs(row):
        return {k: v for k, v in row.items() if k.startswith("knob/")}

    g_steps, g_images = compute(grid["rows"])
    result = {
        "metric": grid["metric"], "iters_per_trial": args.iters, "image_size": args.image_size, "seed": args.seed,
        "grid": {"trials": len(grid["rows"]), "trial_steps": g_steps, "images": g_images, "seconds": grid_s,
                 "best": best["score"], "best_trial": knobs(best)},
        "noise": {"seeds": [0, 1, 2], "scores": seed_scores, "std": noise_std},
    }
    m = result["metric"]
    print(f"\n{m} (lower is better); {args.iters} iterations per unstopped trial, {args.image_size} px, "
          f"TPE seed {args.seed}\n")
    print("| search | trials | stopped early | trial-steps | images | wall time | best " + m + " | behind the grid's best |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| full grid | {len(grid['rows'])} | 0 | {g_steps} | {g_images} | {grid_s / 60:.1f} min | "
          f"{best['score']:.3f} | |")
    for scheduler, (s, seconds) in searches.items():
        steps, imgs = compute(s["rows"])
        behind = (s["best"]["score"] - best["score"]) / noise_std
        result[f"{scheduler}_tpe"] = {"trials": len(s["rows"]), "stopped_early": s["stopped early"],
                                      "trial_steps": steps, "images": imgs, "seconds": seconds,
                                      "best": s["best"]["score"], "best_trial": knobs(s["best"]),
                                      "noise_std_behind": behind}
        print(f"| {scheduler.upper()} + TPE | {len(s['rows'])} | {s['stopped early']} | {steps} "
              f"({100 * steps / g_steps:.0f}%) | {imgs} ({100 * imgs / g_images:.0f}%) | {seconds / 60:.1f} min | "
              f"{s['best']['score']:.3f} | {behind:+.2f} noise std |")
    (root / f"tune_efficiency-seed{args.seed}.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"\nnoise: the grid's best point with seeds 0, 1, 2: {', '.join(f'{s:.3f}' for s in seed_scores)} "
          f"(std {noise_std:.3f})")
    analyze(root, args.seed)


if __name__ == "__main__":
    main()
