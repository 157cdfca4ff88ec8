"""`colorray train-local`: train in this process, without Ray (debugging, CPU runs)."""

from __future__ import annotations

from pathlib import Path

import torch

from colorray.atomic import write_json_atomic
from colorray.config import load_params
from colorray.data.storage import stage_shards
from colorray.precision import FP32
from colorray.train.loop import train_local, validate
from colorray.train.step import GANTrainer


def run(args) -> None:
    params = load_params(args.params)
    shards = stage_shards(args.shards, params.data.shards_url)
    untrained = GANTrainer(params, args.device, precision=FP32).G  # the weights train_local starts from
    before, _ = validate(untrained, shards, args.device, max_images=512)
    trainer = train_local(params, shards, args.out, device=args.device, resume=not args.fresh,
                          max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    after, _ = validate(trainer.G, shards, args.device, max_images=512)
    print(f"val colorfulness (Hasler & Süsstrunk) on {after['val/images']} images: gray baseline 0.00, "
          f"untrained generator {before['val/colorfulness']:.2f}, after {trainer.iter} iterations "
          f"{after['val/colorfulness']:.2f}, ground truth {after['val/colorfulness_true']:.2f}")
    write_json_atomic(Path(args.out) / "colorfulness.json",
                      {"iterations": trainer.iter, "torch_threads": torch.get_num_threads(), "gray": 0.0,
                       "untrained": before["val/colorfulness"], "trained": after["val/colorfulness"],
                       "truth": after["val/colorfulness_true"], "images": after["val/images"]})
