"""Fine-tuning from a base model vs training from random weights, with the same budget (issue 17).

    python benchmarks/finetune.py [--out bench-finetune] [--base-iters 600] [--iters 300] [--every 25]
                                  [--folder DIR]

1. The base: the demo preset's nets (the `make run` default) trained on the Tiny-ImageNet mini
   set (../shared/datasets/tiny-imagenet-200-mini.zip, sharded here at 64 px) for --base-iters
   iterations, saved as a generator file with D (what the train stage writes).
2. The target data: the embedded photos (skimage), or --folder DIR (your own photos).
   Two runs of --iters iterations with identical parameters and seed: one starting from the
   base (colorray.train.init_from: the init stage's file, G and D loaded), one from random
   weights.

Both are measured on the target's val split every --every iterations (val/l1, val/delta_cf)
from iteration 0; printed side by side, with the iterations each run needs to reach the val/l1
the random-weights run ends at. Runs in this process (no Ray: the same GANTrainer step the Ray
workers run), on the CPU with fp32.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT.parent / "shared" / "datasets" / "tiny-imagenet-200-mini.zip"
MINI_SHA256 = "406d1bb1595f75faf8c9eaf34fdbf7c719035c6b522d7a27e773fdcb60f98efd"


def shards_of(source: dict, root: Path) -> Path:
    from colorray.config import DataParams
    from colorray.data.shards import write_shards
    from colorray.data.sources import fetch_source

    if not (root / "shards" / "manifest.json").exists():
        cfg = DataParams(**source)
        fetch_source(cfg, root / "raw", root / "downloads")
        write_shards(cfg, root / "raw", root / "shards", progress=False)
    return root / "shards"


def train(params, shards: Path, iters: int, every: int, init: dict | None = None, label: str = "") -> tuple:
    """(trainer, [(iter, val/l1, val/delta_cf)]) after `iters` iterations from `init` or random weights."""
    from colorray.data.loader import make_loader
    from colorray.train import init_from
    from colorray.train.loop import batch_stream, next_iteration, validate
    from colorray.train.step import GANTrainer

    trainer = GANTrainer(params, "cpu", log=lambda m: None)
    if init is not None:
        init_from.apply(trainer, init, log=lambda m: print(f"  {label}: {m}", flush=True))
    t = params.train
    loader = make_loader(shards, "train", t.batch_size, num_workers=0, seed=t.seed,
                         shuffle_buffer=params.loader.shuffle_buffer)
    stream = batch_stream(loader, trainer.data_position)
    curve, start = [], time.perf_counter()
    while True:
        if trainer.iter % every == 0:
            val, _ = validate(trainer.G, shards, "cpu")
            curve.append((trainer.iter, val["val/l1"], val["val/delta_cf"]))
            print(f"  {label} iter {trainer.iter:4d}: val/l1 {val['val/l1']:.4f}, val/delta_cf {val['val/delta_cf']:.2f}"
                  f" ({time.perf_counter() - start:.0f} s)", flush=True)
        if trainer.iter >= iters:
            return trainer, curve
        next_iteration(trainer, stream, "cpu")


def first_reaching(curve, target: float):
    return next((it for it, l1, _ in curve if l1 <= target), None)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-finetune")
    ap.add_argument("--base-iters", type=int, default=600)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--folder", default=None, help="target photos (default: the embedded skimage photos)")
    args = ap.parse_args(argv)
    if not MINI.exists():
        sys.exit(f"needs {MINI} (the shared Tiny-ImageNet mini set)")
    from colorray.config import parse_params
    from colorray.models.files import save_generator
    from colorray.train import init_from

    torch.set_num_threads(2)
    out = Path(args.out).resolve()
    raw = {"preset": "demo", "train": {"batch_size": args.batch_size, "amp": "none", "channels_last": False},
           "loader": {"num_workers": 0}}
    base_shards = shards_of({"source": "tiny-imagenet", "url": MINI.as_uri(), "sha256": MINI_SHA256}, out / "tiny")
    target = {"source": "folder", "path": args.folder} if args.folder else {"source": "skimage"}
    target_shards = shards_of(target, out / "target")

    base_file = out / "base-generator.pt"
    if not base_file.exists():
        print(f"base: {args.base_iters} iterations on Tiny-ImageNet mini ({base_shards})", flush=True)
        params = parse_params({**raw, "train": {**raw["train"], "iters": args.base_iters}})
        base, _ = train(params, base_shards, args.base_iters, max(args.every, args.base_iters // 4), label="base")
        save_generator(base.G, params, base.iter, base_file, D=base.D.state_dict())
    init_from.resolve(str(base_file), out / "init")
    init = init_from.load(out / "init" / "init.pt")

    params = parse_params({**raw, "train": {**raw["train"], "iters": args.iters}})
    print(f"target: {target}, {args.iters} iterations each", flush=True)
    _, tuned = train(params, target_shards, args.iters, args.every, init, "from base")
    _, scratch = train(params, target_shards, args.iters, args.every, None, "from random")
    goal = scratch[-1][1]
    result = {"base_iters": args.base_iters, "iters": args.iters, "batch_size": args.batch_size,
              "target": target, "from_base": tuned, "from_random": scratch, "goal_val_l1": goal,
              "iters_to_goal": {"from_base": first_reaching(tuned, goal), "from_random": first_reaching(scratch, goal)}}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print("\n| iteration | val/l1 from base | val/l1 from random | val/delta_cf from base | val/delta_cf from random |")
    print("|---|---|---|---|---|")
    for (it, l1a, dca), (_, l1b, dcb) in zip(tuned, scratch):
        print(f"| {it} | {l1a:.4f} | {l1b:.4f} | {dca:.2f} | {dcb:.2f} |")
    print(f"\nval/l1 {goal:.4f} (random weights after {args.iters} iterations) reached at iteration "
          f"{result['iters_to_goal']['from_base']} from the base, {result['iters_to_goal']['from_random']} from random")


if __name__ == "__main__":
    main()
