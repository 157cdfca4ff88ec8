"""`colorray classifier` (DVC stage classifier): the classifier of study 002's metrics."""

from __future__ import annotations

from pathlib import Path

from colorray.config import load_params
from colorray.data.storage import stage_shards
from colorray.real_classifier import train_real_classifier


def run(args) -> None:
    params = load_params(args.params)
    s = train_real_classifier(params, stage_shards(args.shards, params.data.shards_url), Path(args.out))
    if "unavailable" in s:
        print(f"classifier: not trained: {s['unavailable']}; wrote {args.out} saying so")
        return
    acc = (f"accuracy {s['test_accuracy']:.3f} on the {s['test_images']} real test images of those classes"
           if s["test_accuracy"] is not None else "no test image has a class of the training split")
    print(f"classifier: {s['classes']} classes, {s['train_images']} training images; {acc} -> {args.out}")
