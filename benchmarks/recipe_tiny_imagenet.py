"""Issue 19's real-data recipe: study 000's cGAN and WGAN presets and the L1-only baseline on the
Tiny-ImageNet mini set at 64 px, each trained for the same CPU time, evaluated on its held-out
test split by the evaluate stage's own code.

    python benchmarks/recipe_tiny_imagenet.py --minutes 45 [--out recipe]   # ~2.5 h on 2 cores
    python benchmarks/recipe_tiny_imagenet.py --minutes 0.2 --quick         # a check of the script

Runs (in this process, `train_local`, checkpoints in --out, so an interrupted recipe resumes):
  * cGAN: preset 000-cgan (BCE, D loss halved, lambda 100 L1, batch 128, study 000's nets);
  * WGAN: preset 000-wgan (clip 0.01, 10 critic steps, RMSprop);
  * L1-only: preset 000-cgan with gan.adv_weight 0 (the same generator, no discriminator).
Each stops after --minutes of training. Then `evaluate` twice, cGAN vs L1-only and WGAN vs
L1-only (gray is measured by both), into --out/eval-cgan and --out/eval-wgan: every registry
metric (ΔCF, PSNR, SSIM, UIQI, colorfulness, Ω, ...), the sample grids and the report. Prints
one markdown table with the iterations each run reached, and the two questions of the issue.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from colorray.config import parse_params
from colorray.evaluate import evaluate
from colorray.models.files import save_generator
from colorray.real_classifier import train_real_classifier
from colorray.train.loop import train_local
from evaluate_tiny_imagenet import tiny_imagenet_shards  # benchmarks/ is on the path of its scripts

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"cgan": {"preset": "000-cgan"}, "wgan": {"preset": "000-wgan"},
        "l1": {"preset": "000-cgan", "gan": {"adv_weight": 0.0}}}
COLUMNS = ["delta_cf", "colorfulness", "psnr", "ssim", "uiqi", "omega", "l1", "fid", "lpips"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zip", default=str(ROOT.parent / "shared/datasets/tiny-imagenet-200-mini.zip"))
    ap.add_argument("--minutes", type=float, default=45.0, help="training time of each run")
    ap.add_argument("--out", default="recipe")
    ap.add_argument("--quick", action="store_true", help="few test images and a small classifier (a check)")
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    out, zip_path = Path(args.out).resolve(), Path(args.zip).resolve()
    data, shards = tiny_imagenet_shards(zip_path, out)
    extra = {"evaluate": {"max_images": 96}, "classifier": {"epochs": 1, "max_train_images": 512}} if args.quick else {}

    params, done = {}, {}
    for name, overrides in RUNS.items():
        params[name] = parse_params({**overrides, **extra, "data": data})
        path = out / f"{name}.pt"
        info = out / f"{name}.json"
        if not path.exists():
            start = time.perf_counter()
            trainer = train_local(params[name], shards, out / f"{name}-run", max_seconds=args.minutes * 60,
                                  log=lambda m, n=name: print(f"{n}: {m}", flush=True), log_every=50)
            save_generator(trainer.G, params[name], trainer.iter, path)
            info.write_text(json.dumps({"iterations": trainer.iter, "seconds": time.perf_counter() - start}))
        done[name] = json.loads(info.read_text())
    clf = out / "classifier.pt"
    if not clf.exists():
        train_real_classifier(params["cgan"], shards, clf)
    summaries = {}
    for gan in ("cgan", "wgan"):
        summaries[gan] = evaluate(params[gan], shards, out / f"{gan}.pt", out / "l1.pt", clf, out / f"eval-{gan}", out)
    rows = {"gray": summaries["cgan"]["models"]["gray"], "L1-only": summaries["cgan"]["models"]["reconstruction"],
            "cGAN (000-cgan)": summaries["cgan"]["models"]["gan"], "WGAN (000-wgan)": summaries["wgan"]["models"]["gan"]}
    runs = {"L1-only": done["l1"], "cGAN (000-cgan)": done["cgan"], "WGAN (000-wgan)": done["wgan"]}
    cols = [c for c in COLUMNS if any(c in m for m in rows.values())]
    test_images = summaries["cgan"]["reference"]["test_images"]
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.minutes:g} min of "
          f"training each; {test_images} test images\n")
    print("| model | iterations | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name, m in rows.items():
        it = f"{runs[name]['iterations']:,}" if name in runs else "-"
        print(f"| {name} | {it} | " + " | ".join(f"{m[k]:.4g}" if k in m else "n/a" for k in cols) + " |")
    cg, wg, l1 = rows["cGAN (000-cgan)"], rows["WGAN (000-wgan)"], rows["L1-only"]
    print(f"\nWGAN more saturated than cGAN (study 000)? colorfulness {wg['colorfulness']:.3g} vs "
          f"{cg['colorfulness']:.3g}: {'yes' if wg['colorfulness'] > cg['colorfulness'] else 'no'}")
    for name, m in (("cGAN", cg), ("WGAN", wg)):
        equal = abs(m["psnr"] - l1["psnr"]) <= 1.0
        print(f"{name} vs L1-only: ΔCF {m['delta_cf']:.3g} vs {l1['delta_cf']:.3g}, PSNR {m['psnr']:.2f} vs "
              f"{l1['psnr']:.2f} dB ({'within' if equal else 'not within'} 1 dB): "
              f"{'beats' if m['delta_cf'] < l1['delta_cf'] else 'does not beat'} it on ΔCF")
    for gan, s in summaries.items():
        print(f"selection ({gan} vs L1-only): {s['selection']['reason']}")
    print(f"grids: {out}/eval-cgan/samples.png, {out}/eval-wgan/samples.png (gray | L1-only | GAN | truth)")


if __name__ == "__main__":
    main()
