"""The evaluate stage on the Tiny-ImageNet mini set: a short CPU training of the default preset
against the gray and reconstruction-only baselines.

    python benchmarks/evaluate_tiny_imagenet.py [--zip ../shared/datasets/tiny-imagenet-200-mini.zip]
                                                [--iters 400] [--out bench-eval]

The real stage code on real data: the tiny-imagenet source fetched from a file:// URL (checksum
verified, extracted, sharded at 64 px), the default parameters (vanilla cGAN, lambda 100, batch
32) trained in this process for --iters iterations, the reconstruction-only baseline with the same
budget, the classifier, then `colorray.evaluate.evaluate` on the whole test split. Prints the
metrics table as markdown and the time of each step. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

from colorray.models.files import save_generator
from colorray.config import DataParams, parse_params
from colorray.data.shards import write_shards
from colorray.data.sources import fetch_source
from colorray.baseline import train_baseline
from colorray.evaluate import evaluate
from colorray.real_classifier import train_real_classifier
from colorray.train.loop import train_local

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["fid", "lpips", "ssim", "psnr", "psnr_ab", "uiqi", "l1", "colorfulness", "delta_cf", "accuracy",
           "cim", "omega"]


def tiny_imagenet_shards(zip_path: Path, out: Path) -> tuple[dict, Path]:
    """The mini set fetched from its file:// URL (checksum verified) and sharded in out/shards
    (kept between runs): the `data` params and the shard folder."""
    data = {"source": "tiny-imagenet", "url": zip_path.as_uri(),
            "sha256": hashlib.sha256(zip_path.read_bytes()).hexdigest()}
    shards = out / "shards"
    if not (shards / "manifest.json").exists():
        cfg = DataParams(**data)
        fetch_source(cfg, out / "raw", out / "downloads")
        write_shards(cfg, out / "raw", shards, progress=False)
    return data, shards


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zip", default=str(ROOT.parent / "shared/datasets/tiny-imagenet-200-mini.zip"))
    ap.add_argument("--iters", type=int, default=400, help="generator iterations (GAN and baseline)")
    ap.add_argument("--out", default="bench-eval")
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    out = Path(args.out).resolve()
    zip_path = Path(args.zip).resolve()
    times = {}

    start = time.perf_counter()
    data, shards = tiny_imagenet_shards(zip_path, out)
    times["fetch + shard"] = time.perf_counter() - start

    params = parse_params({"data": data, "train": {"iters": args.iters}})
    start = time.perf_counter()
    trainer = train_local(params, shards, out / "gan-run", resume=False, log=lambda m: None)
    save_generator(trainer.G, params, trainer.iter, out / "generator.pt")
    times["GAN training"] = time.perf_counter() - start
    start = time.perf_counter()
    train_baseline(params, shards, out / "baseline.pt", log=lambda m: None)
    times["baseline training"] = time.perf_counter() - start
    start = time.perf_counter()
    c = train_real_classifier(params, shards, out / "classifier.pt")
    times["classifier"] = time.perf_counter() - start
    start = time.perf_counter()
    s = evaluate(params, shards, out / "generator.pt", out / "baseline.pt", out / "classifier.pt", out / "eval", out)
    times["evaluate"] = time.perf_counter() - start

    (out / "bench.json").write_text(json.dumps({"times": times, "classifier": c, "summary": s}, indent=1, default=str))
    cols = [k for k in COLUMNS if any(k in m for m in s["models"].values())]
    print(f"\n{s['reference']['test_images']} test images, {c['classes']} classes, {args.iters} iterations\n")
    print("| model | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, m in s["models"].items():
        print(f"| {name} | " + " | ".join(f"{m[k]:.4g}" if k in m else "n/a" for k in cols) + " |")
    ref = s["reference"]
    print(f"\nreal test images: accuracy {ref.get('accuracy_real')}, CIM {ref.get('cim_real')} "
          f"({ref['classifier_test_images']} images)")
    print(f"selection: {s['selection']['reason']}")
    print("notes: " + " / ".join(s["notes"]))
    print("times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items()))


if __name__ == "__main__":
    main()
