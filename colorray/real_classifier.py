"""The classifier stage: the classifier of study 002's metrics (colorray.metrics.classifier),
trained on the real training images and their labels."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch

from colorray.config import Params
from colorray.data.loader import load_split
from colorray.data.shards import read_manifest
from colorray.metrics import classifier as clf
from colorray.progress import Progress


def train_real_classifier(params: Params, shards: str | Path, out: Path, log: Callable[[str], None] = print) -> dict:
    c = params.classifier
    classes = read_manifest(shards)["labels"]  # every label of the data, in every split
    rgb, _, labels = load_split(shards, "train", c.max_train_images)
    if "" in labels or len(classes) < 2:
        reason = (f"the classifier metrics need a label on every image and at least 2 classes; {shards} has "
                  f"{len(classes)}{' and unlabeled images' if '' in labels else ''} (labels come from "
                  "Tiny-ImageNet's classes or the first folder level of a folder source)")
        clf.save_unavailable(reason, out)
        return {"unavailable": reason}
    settings = c.model_dump(mode="json")
    progress = Progress(f"classifier: {len(rgb)} images, {c.epochs} epoch(s)",
                        c.epochs * math.ceil(len(rgb) / c.batch_size), "batches", log)
    model = clf.train_classifier(rgb, clf.label_indices(labels, classes, f"{shards} train"), len(classes),
                                 epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, seed=c.seed, width=c.width,
                                 progress=progress)
    test_rgb, _, test_labels = load_split(shards, "test")
    known = classes_seen(labels, test_labels)
    acc = (clf.accuracy(clf.predict(model, test_rgb[known]), clf.label_indices(
        [test_labels[i] for i in known.nonzero()[:, 0]], classes, f"{shards} test")) if known.any() else None)
    clf.save(model, classes, settings, out)
    return {"classes": len(classes), "train_images": len(rgb), "test_accuracy": acc,
            "test_images": int(known.sum())}


def classes_seen(train_labels: list[str], test_labels: list[str]) -> torch.Tensor:
    """Which test images have a class the classifier saw in training (a mask). Sources that
    split by photo (the embedded default: its test photo is `coffee`) have none."""
    seen = set(train_labels)
    return torch.tensor([lab in seen for lab in test_labels], dtype=torch.bool)
