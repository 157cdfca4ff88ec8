"""Choose the base model's chroma gain on the val split, and write the generator with it.

A GAN colorizes vividly, and where it guesses wrong a vivid color costs more fidelity than a
pale one. `model.chroma_gain` scales the generator's ab output (no weight changes, no training):
this script tries the gains 0.30, 0.35, ..., 1.00 on the val split's color photos and keeps the
one whose colorfulness is closest to the photos' own (lowest ΔCF) among those that lose at most
`--margin` dB of PSNR and `--max-ssim-loss` of SSIM to leaving the photos gray. The margin
(0.25 dB) is half the shipping tolerance: room for photos it has not seen. The test split is
never read here; benchmarks/base_quality.py measures the result on it.

    python base/calibrate.py models/generator.pt --shards data/shards --out models/calibrated.pt

Writes the generator file (`--out`) and every gain's metrics as JSON (`--table`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from colorray.atomic import write_text_atomic
from colorray.color import rgb_uint8_to_lab
from colorray.config import parse_params
from colorray.data.loader import make_loader
from colorray.evaluate import promotion_tests
from colorray.metrics.registry import MetricAccumulator
from colorray.models.files import generator_from_state, read_model_file, save_generator

GAINS = tuple(np.round(np.arange(0.30, 1.0001, 0.05), 2))


@torch.no_grad()
def val_predictions(G, shards: str, max_images: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L, ab of the photos, the generator's ab at gain 1) for the val split."""
    Ls, abs_, preds, n = [], [], [], 0
    for batch in make_loader(shards, "val", 256, num_workers=0, shuffle=False, drop_last=False):
        L, ab = rgb_uint8_to_lab(batch["rgb"], "cpu")
        Ls.append(L), abs_.append(ab), preds.append(G(L).float())
        n += len(L)
        if max_images and n >= max_images:
            break
    L, ab, pred = torch.cat(Ls), torch.cat(abs_), torch.cat(preds)
    return (L, ab, pred) if not max_images else (L[:max_images], ab[:max_images], pred[:max_images])


def measure(L, ab_true, ab_pred) -> dict:
    acc = MetricAccumulator()
    for i in range(0, len(L), 256):
        acc.update(L[i:i + 256], ab_pred[i:i + 256], ab_true[i:i + 256])
    return acc.result()


def choose(rows: dict, margin: float, max_ssim_loss: float) -> float | None:
    """The gain with the lowest ΔCF among those that pass the evaluate stage's promotion tests
    with these margins (beat gray on ΔCF, PSNR and SSIM within the margins; None: no gain does)."""
    ok = [g for g in rows if g != "gray"
          and all(t["passed"] for t in promotion_tests(rows, g, "delta_cf", margin, max_ssim_loss))]
    return min(ok, key=lambda g: rows[g]["delta_cf"]) if ok else None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="the trained generator (.pt) or training checkpoint")
    ap.add_argument("--shards", default="data/shards")
    ap.add_argument("--out", required=True, help="the generator file to write, with its chosen gain")
    ap.add_argument("--table", default=None, help="every gain's val metrics as JSON")
    ap.add_argument("--margin", type=float, default=0.25, help="PSNR (dB) the gain may lose to gray")
    ap.add_argument("--max-ssim-loss", type=float, default=0.05)
    ap.add_argument("--max-images", type=int, default=None, help="the first N val photos only")
    args = ap.parse_args(argv)

    model = read_model_file(args.model)
    G = generator_from_state(model.params, model.G).float()
    if G.chroma_gain != 1.0:
        raise SystemExit(f"{args.model}: already has chroma_gain {G.chroma_gain}; calibrate the trained model")
    L, ab, pred = val_predictions(G, args.shards, args.max_images)
    rows = {"gray": measure(L, ab, torch.zeros_like(ab))}
    for g in GAINS:
        rows[float(g)] = measure(L, ab, pred * float(g))
        m = rows[float(g)]
        print(f"gain {g:.2f}: PSNR {m['psnr']:.2f} (gray {rows['gray']['psnr']:.2f}), SSIM {m['ssim']:.4f}, "
              f"ΔCF {m['delta_cf']:.2f} (gray {rows['gray']['delta_cf']:.2f})", flush=True)
    gain = choose(rows, args.margin, args.max_ssim_loss)
    if gain is None:
        raise SystemExit(f"{args.model}: no gain keeps PSNR within {args.margin} dB and SSIM within "
                         f"{args.max_ssim_loss} of gray on the val split; nothing written")
    raw = model.params.model_dump(mode="json")
    raw["model"]["chroma_gain"] = gain
    params = parse_params(raw, origin=f"{args.model} with chroma_gain {gain}")
    G = generator_from_state(params, model.G)
    save_generator(G, params, model.iter, args.out, kind="calibrated", source_kind=model.kind,
                   calibration={"gain": gain, "split": "val", "images": rows["gray"]["images"],
                                "margin_db": args.margin, "max_ssim_loss": args.max_ssim_loss})
    if args.table:
        write_text_atomic(Path(args.table), json.dumps({str(k): v for k, v in rows.items()}, indent=1) + "\n")
    print(f"{args.out}: chroma_gain {gain} (val: PSNR {rows[gain]['psnr']:.2f} vs gray {rows['gray']['psnr']:.2f}, "
          f"ΔCF {rows[gain]['delta_cf']:.2f} vs gray {rows['gray']['delta_cf']:.2f}, "
          f"{rows['gray']['images']} color photos, {rows['gray']['gray_photos']} gray ones left out)")


if __name__ == "__main__":
    main()
