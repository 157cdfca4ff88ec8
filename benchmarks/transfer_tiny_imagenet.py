"""What the models `make run` trained do to real photos they never saw: models/generator.pt (the
GAN) and models/baseline.pt (reconstruction-only) against leaving the photo gray, on the
Tiny-ImageNet mini set's test split at 64 px, measured by the evaluate stage's own code.

    python benchmarks/transfer_tiny_imagenet.py [--models models] [--max-images 2000] [--out bench-transfer]

The embedded demo trains on eight photographs; this is the check of issue 19 that its colors
transfer (or do not) to varied everyday photos: ΔCF, colorfulness, PSNR, SSIM, UIQI of each model
and of gray, and whether the selection rule would promote the GAN on these photos. The classifier
metrics (accuracy, CIM, Ω) are left out (no classifier of these classes is trained here). Prints
one markdown table. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from colorray.config import parse_params
from colorray.evaluate import evaluate
from colorray.metrics import classifier as clf
from colorray.models.files import load_generator, save_generator
from evaluate_tiny_imagenet import tiny_imagenet_shards  # benchmarks/ is on the path of its scripts

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["delta_cf", "colorfulness", "psnr", "ssim", "uiqi", "l1"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zip", default=str(ROOT.parent / "shared/datasets/tiny-imagenet-200-mini.zip"))
    ap.add_argument("--models", default=str(ROOT / "models"), help="folder with generator.pt and baseline.pt")
    ap.add_argument("--max-images", type=int, default=2000, help="test images (the first N of the split)")
    ap.add_argument("--out", default="bench-transfer")
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    out, models = Path(args.out).resolve(), Path(args.models).resolve()
    data, shards = tiny_imagenet_shards(Path(args.zip).resolve(), out)
    params = parse_params({"data": data, "evaluate": {"max_images": args.max_images}})
    clf.save_unavailable("not measured by this benchmark", out / "no-classifier.pt")
    # Copies without the links to the project's MLflow runs and models (this one records into --out).
    for name in ("generator.pt", "baseline.pt"):
        G, p, meta = load_generator(models / name)
        links = ("run_id", "model_uri", "iter")
        save_generator(G, p, meta.get("iter", 0), out / name, **{k: v for k, v in meta.items() if k not in links})
    start = time.perf_counter()
    s = evaluate(params, shards, out / "generator.pt", out / "baseline.pt", out / "no-classifier.pt",
                 out / "eval", out, log=lambda m: None)
    rows = {"gray": s["models"]["gray"], "reconstruction (baseline.pt)": s["models"]["reconstruction"],
            "GAN (generator.pt)": s["models"]["gan"]}
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{s['reference']['test_images']} Tiny-ImageNet test images; {time.perf_counter() - start:.0f} s\n")
    print("| model | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for name, m in rows.items():
        print(f"| {name} | " + " | ".join(f"{m[k]:.4g}" for k in COLUMNS) + " |")
    print(f"\nselection on these photos: {s['selection']['reason']}")
    print(f"grid: {out}/eval/samples.png (gray | reconstruction | GAN | truth)")


if __name__ == "__main__":
    main()
