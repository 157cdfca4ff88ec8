"""Ray Train scaling: img/s with 1 vs 2 workers, and the communication share of a step.

    python benchmarks/train_scaling.py [--iters 40] [--gpu]

Runs the real train stage (`colorray.train.distributed.fit`) on the embedded skimage shards
(fetched and sharded into a temporary folder) at 64 px, global batch 32, the default
architecture and precision. The workers split the machine's CPUs between them (or take one GPU
each with --gpu). img/s is the global throughput reported by rank 0 between its last two
reports (warm-up excluded); comm/share is the time spent in the gradient all-reduce divided by
the wall time of the same interval, averaged over ranks.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from colorray.config import DataParams, parse_params
from colorray.data.shards import write_shards
from colorray.data.sources import fetch_source
from colorray.train.distributed import fit


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--gpu", action="store_true", help="one GPU per worker")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--preset", default=None, help="e.g. 000-cgan for study 000's 64-px configuration")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    cpus = os.cpu_count() or 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fetch_source(DataParams(), tmp / "raw", tmp / "dl")
        write_shards(DataParams(), tmp / "raw", tmp / "shards", progress=False)
        for n in args.workers:
            report = max(1, args.iters // 4)
            params = parse_params({
                "preset": args.preset,
                "train": {"iters": args.iters, "batch_size": args.batch, "checkpoint_every": args.iters},
                "ray": {"num_workers": n, "use_gpu": args.gpu,
                        "cpus_per_worker": max(1, cpus // n) if not args.gpu else max(1, cpus // n),
                        "report_every": report, "eval_every": args.iters * 10,
                        "storage_path": str(tmp / "ray")},
                "loader": {"num_workers": 1}})
            summary = fit(params, tmp / "shards", tmp, tmp / f"models{n}", tmp / f"metrics{n}")
            m = summary["metrics"]
            rows.append((n, m["img/s"], m.get("comm/share", 0.0)))
            print(f"workers={n}: {m['img/s']:.1f} img/s, gradient all-reduce {100 * m.get('comm/share', 0):.1f}% "
                  f"of step time", flush=True)
    device = "GPU" if args.gpu else f"CPU ({cpus} cores)"
    print(f"\n{device}, 64 px, global batch {args.batch}, {args.iters} iterations per run\n")
    print("| Ray workers | img/s | speed-up | all-reduce share of step time |")
    print("|---|---|---|---|")
    for n, ips, comm in rows:
        print(f"| {n} | {ips:.1f} | {ips / rows[0][1]:.2f}x | {100 * comm:.1f}% |")


if __name__ == "__main__":
    main()
