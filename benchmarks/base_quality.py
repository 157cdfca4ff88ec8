"""The base model's table: gray and each given model on every held-out photo of the base
pipeline's shards (Tiny-ImageNet-200's official val split: the val and test splits of
base/data/shards, 10,100 photos at 64 px, each made gray), by the metric registry's own code.

    python benchmarks/base_quality.py --shards base/data/shards \
        L1-only=base/models/baseline.pt GAN=base/models/generator.pt shipped=builtin:base

Each MODEL is NAME=REF with REF as everywhere in colorray (a generator .pt, a checkpoint.pt,
models:/..., builtin:base). Prints one markdown table (PSNR, SSIM, ΔCF, colorfulness; LPIPS
when its weights are installed) and, for each model, the must-show tests (PSNR >= gray - 0.5 dB,
ΔCF <= half of gray's) and the project's promotion rule with params.yaml's margins. Photos that
are gray already are left out (the metric registry's rule) and counted. --splits test: the test
half alone (base/calibrate.py chooses the chroma gain on val). --grid FILE: the first
--grid-images color photos of the last split, gray | each model | truth. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from colorray.color import lab_to_rgb_normalized, rgb_uint8_to_lab, to_uint8
from colorray.colorize import load_model
from colorray.config import parse_params
from colorray.data.loader import make_loader
from colorray.evaluate import _grid, promotion_tests
from colorray.metrics.registry import MetricAccumulator, already_gray

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
    ap.add_argument("--splits", default="val,test", help="held-out splits to measure, comma-separated")
    ap.add_argument("--grid", default=None, help="PNG: gray | each model | truth on the first color photos")
    ap.add_argument("--grid-images", type=int, default=8)
    ap.add_argument("models", nargs="+", metavar="NAME=REF")
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    torch.manual_seed(0)
    start = time.perf_counter()
    splits = tuple(args.splits.split(","))
    rows = {"gray (ab = 0)": measure(None, args.shards, splits, args.max_images)}
    models = {}
    for spec in args.models:
        name, _, ref = spec.partition("=")
        models[name], _ = load_model(ref)
        rows[name] = measure(models[name], args.shards, splits, args.max_images)
    gray = rows["gray (ab = 0)"]
    if args.grid:
        write_grid(models, args.shards, splits[-1], args.grid_images, args.grid)
    cols = [c for c in COLUMNS if c in gray]
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores; splits {args.splits}: "
          f"{gray['images']} color photos ({gray['gray_photos']} gray ones left out); truth colorfulness "
          f"{gray['colorfulness_true']:.2f}; {time.perf_counter() - start:.0f} s\n")
    rule = parse_params({}).evaluate
    print("| model | " + " | ".join(cols) + " | PSNR >= gray - 0.5 dB | ΔCF <= gray's / 2 | promotion rule |")
    print("|---|" + "---|" * (len(cols) + 3))
    for name, m in rows.items():
        tests = ("-", "-", "-") if m is gray else (
            "yes" if m["psnr"] >= gray["psnr"] - 0.5 else f"no ({m['psnr'] - gray['psnr']:+.2f} dB)",
            "yes" if m["delta_cf"] <= gray["delta_cf"] / 2 else f"no ({m['delta_cf']:.2f} > {gray['delta_cf'] / 2:.2f})",
            promotion(gray, m, rule))
        print(f"| {name} | " + " | ".join(f"{m[c]:.4g}" for c in cols) + f" | {' | '.join(tests)} |")


def promotion(gray: dict, m: dict, rule) -> str:
    """The evaluate stage's promotion tests (ΔCF beats gray, PSNR and SSIM within its margins)."""
    tests = promotion_tests({"gray": gray, "m": m}, "m", "delta_cf", rule.max_psnr_loss_db, rule.max_ssim_loss)
    failed = [t["test"] for t in tests if not t["passed"]]
    return "passes" if not failed else "fails: " + ", ".join(failed)


@torch.no_grad()
def write_grid(models: dict, shards: str, split: str, n: int, path: str) -> None:
    """Rows gray | each model | truth for the first `n` color photos of `split`."""
    from PIL import Image

    rgb = next(iter(make_loader(shards, split, 256, num_workers=0, shuffle=False, drop_last=False)))["rgb"]
    rgb = rgb[torch.from_numpy(~already_gray(rgb.numpy()))][:n]
    L, ab = rgb_uint8_to_lab(rgb, "cpu")
    cols = [torch.zeros_like(ab)] + [G(L).float() for G in models.values()] + [ab]
    images = [to_uint8(lab_to_rgb_normalized(L, c)).numpy() for c in cols]
    Image.fromarray(_grid([[im[i] for im in images] for i in range(len(rgb))])).save(path)
    print(f"{path}: {len(rgb)} photos of {split}, columns gray | {' | '.join(models)} | truth")


if __name__ == "__main__":
    main()
