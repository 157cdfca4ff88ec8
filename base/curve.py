"""The base model's quality against training time: the validation metrics its train stage
logged every `ray.eval_every` iterations (PSNR and ΔCF on the val split), with gray's level
beside them, as a CSV and a PNG for docs/results.md.

    python base/curve.py --store base/mlflow.db --out docs/results/base-curve

The x axis is iterations and images seen; the seconds a run took are not a fair clock when
its machine was shared or paused, so the hours shown come from --s-per-iter, the speed measured
on an idle machine (say which CPU in the text that quotes it). Gray (ab = 0) has ΔCF equal to
the true photos' colorfulness, which the run logs as val/colorfulness_true; its PSNR is given
with --gray-psnr (benchmarks/base_quality.py prints it).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from mlflow import MlflowClient

METRICS = ("val/psnr", "val/delta_cf", "val/ssim", "val/colorfulness_true")


def train_run(client: MlflowClient, run_id: str | None):
    if run_id:
        return client.get_run(run_id)
    exp = client.get_experiment_by_name("colorray")
    if exp is None:
        raise SystemExit("the store has no 'colorray' experiment: is --store the base pipeline's mlflow.db?")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`colorray.stage` = 'train'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SystemExit("the store holds no train run")
    return runs[0]


def curve(client: MlflowClient, run) -> list[dict]:
    """One row per evaluated iteration: the METRICS logged at that step."""
    rows: dict[int, dict] = {}
    for name in METRICS:
        for m in client.get_metric_history(run.info.run_id, name):
            rows.setdefault(m.step, {"iter": m.step})[name] = m.value
    return [rows[k] for k in sorted(rows)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="base/mlflow.db", help="the base pipeline's MLflow store (sqlite file)")
    ap.add_argument("--run", default=None, help="a train run id (default: the newest train run)")
    ap.add_argument("--out", default="docs/results/base-curve", help="writes OUT.csv and OUT.png")
    ap.add_argument("--s-per-iter", type=float, default=None, help="seconds an iteration takes on an idle machine")
    ap.add_argument("--gray-psnr", type=float, default=None, help="gray's PSNR on the same val photos")
    args = ap.parse_args(argv)
    if not Path(args.store).is_file():
        raise SystemExit(f"--store {args.store}: no such file")
    client = MlflowClient(f"sqlite:///{Path(args.store).resolve()}")
    run = train_run(client, args.run)
    rows = curve(client, run)
    if not rows:
        raise SystemExit(f"run {run.info.run_id} logged no validation metrics")
    batch = int(run.data.params.get("train.batch_size", 0))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, ["iter", "images", *METRICS])
        w.writeheader()
        for row in rows:
            w.writerow({"images": row["iter"] * batch, **row})

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["iter"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(x, [r.get("val/psnr") for r in rows], marker=".", label="model")
    if args.gray_psnr is not None:
        a.axhline(args.gray_psnr, color="gray", ls="--", label="gray")
        a.axhline(args.gray_psnr - 0.5, color="gray", ls=":", label="gray − 0.5 dB")
    a.set(title="PSNR on the val split (dB)", xlabel="iteration")
    b.plot(x, [r.get("val/delta_cf") for r in rows], marker=".", label="model")
    gray_cf = [r.get("val/colorfulness_true") for r in rows]
    b.plot(x, gray_cf, color="gray", ls="--", label="gray")
    b.plot(x, [g / 2 if g is not None else None for g in gray_cf], color="gray", ls=":", label="half of gray")
    b.set(title="ΔCF on the val split (lower is better)", xlabel="iteration")
    pretrain = int(run.data.params.get("gan.pretrain_iters", 0) or 0)
    for ax in (a, b):
        if pretrain:
            ax.axvline(pretrain, color="k", lw=0.6)
        if args.s_per_iter:
            sec = ax.secondary_xaxis("top", functions=(lambda i: i * args.s_per_iter / 3600,
                                                       lambda h: h * 3600 / args.s_per_iter))
            sec.set_xlabel("hours on an idle machine")
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"{len(rows)} points, iterations {x[0]}..{x[-1]}: {out.with_suffix('.csv')}, {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
