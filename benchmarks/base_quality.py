"""The base model's table: gray and each given model on every held-out photo of the base
pipeline's shards (Tiny-ImageNet-200's official val split: the val and test splits of
base/data/shards, 10,100 photos at 64 px, each made gray), by the metric registry's own code.

    python benchmarks/base_quality.py --shards base/data/shards \
        L1-only=base/models/baseline.pt GAN=base/models/generator.pt shipped=builtin:base

Each MODEL is NAME=REF with REF as everywhere in colorray (a generator .pt, a checkpoint.pt,
models:/..., builtin:base). Prints one markdown table (PSNR, SSIM, ΔCF, colorfulness; LPIPS
when its weights are installed) and, for each model, the must-show tests: PSNR >= gray - 0.5 dB
and ΔCF <= half of gray's. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from colorray.color import rgb_uint8_to_lab
from colorray.colorize import load_model
from colorray.data.loader import make_loader
from colorray.metrics.registry import MetricAccumulator

COLUMNS = ["psnr", "ssim", "delta_cf", "colorfulness", "lpips"]


@torch.no_grad()
def measure(G, shards: str, splits=("val", "test"), max_images: int | None = None) -> dict:
    """The registry's metrics of `G` (None: gray, ab = 0) on every image of `splits`."""
    acc = MetricAccumulator()
    if G is not None:
        G.eval()
    for split in splits:
        for batch in make_loader(shards, split, 256, num_workers=0, shuffle=False, drop_last=False):
            L, ab = rgb_uint8_to_lab(batch["rgb"], "cpu")
            acc.update(L, torch.zeros_like(ab) if G is None else G(L).float(), ab)
            if max_images and acc.n >= max_images:
                return acc.result()
    return acc.result()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", default="base/data/shards")
    ap.add_argument("--max-images", type=int, default=None, help="a quick look: the first N held-out photos")
    ap.add_argument("models", nargs="+", metavar="NAME=REF")
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    torch.manual_seed(0)
    start = time.perf_counter()
    rows = {"gray (ab = 0)": measure(None, args.shards, max_images=args.max_images)}
    for spec in args.models:
        name, _, ref = spec.partition("=")
        G, _ = load_model(ref)
        rows[name] = measure(G, args.shards, max_images=args.max_images)
    gray = rows["gray (ab = 0)"]
    cols = [c for c in COLUMNS if c in gray]
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {gray['images']} held-out "
          f"photos; truth colorfulness {gray['colorfulness_true']:.2f}; {time.perf_counter() - start:.0f} s\n")
    print("| model | " + " | ".join(cols) + " | PSNR >= gray - 0.5 dB | ΔCF <= gray's / 2 |")
    print("|---|" + "---|" * (len(cols) + 2))
    for name, m in rows.items():
        tests = ("-", "-") if m is gray else (
            "yes" if m["psnr"] >= gray["psnr"] - 0.5 else f"no ({m['psnr'] - gray['psnr']:+.2f} dB)",
            "yes" if m["delta_cf"] <= gray["delta_cf"] / 2 else f"no ({m['delta_cf']:.2f} > {gray['delta_cf'] / 2:.2f})")
        print(f"| {name} | " + " | ".join(f"{m[c]:.4g}" for c in cols) + f" | {tests[0]} | {tests[1]} |")


if __name__ == "__main__":
    main()
