"""Single-process training on shards: the GAN core without Ray, for debugging and tests.

Resumable exactly: a checkpoint records the iteration, the RNG state and the position in the
data stream (epoch, batch), and the loader replays the same batches from there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from colorray.atomic import write_json_atomic
from colorray.color import lab_to_rgb_normalized, rgb_uint8_to_lab, to_uint8
from colorray.config import Params, flatten
from colorray.data.loader import make_loader
from colorray.data.shards import read_manifest
from colorray.data.storage import location
from colorray.metrics.registry import MetricAccumulator
from colorray.progress import format_seconds
from colorray.train.step import GANTrainer, load_checkpoint, metric_values
from colorray.train import init_from

CHECKPOINT = "checkpoint.pt"
GRID_IMAGES = 8  # images in each sample grid


def batch_stream(loader, position: dict) -> Iterator[dict]:
    """Endless batches from `loader`, starting at position {"epoch", "batch"} and keeping it
    current (the caller checkpoints it)."""
    loader.dataset.set_epoch(position["epoch"])  # before the first pass: workers start there
    skip = position["batch"]
    while True:
        for i, batch in enumerate(loader):
            if i < skip:
                continue
            position["batch"] = i + 1
            yield batch
        skip = 0
        position["epoch"] += 1
        position["batch"] = 0


def next_iteration(trainer: GANTrainer, stream: Iterator[dict], device) -> tuple[dict, int, int]:
    """One training iteration (the Ray worker's and train_local's): the batches it needs from
    `stream` (n_critic of them when adversarial) in Lab on `device`. Returns its metrics, the
    images it read and the batches."""
    batches = [rgb_uint8_to_lab(next(stream)["rgb"], device) for _ in range(trainer.batches_needed())]
    return trainer.train_iteration(batches), sum(len(b[0]) for b in batches), len(batches)


@torch.no_grad()
def validate(G, shards: str | Path, device, max_images: int = 256, fid=None,
             fid_cache: Path | None = None) -> tuple[dict, np.ndarray]:
    """The metric registry's values on the first `max_images` val images (always the same
    ones), named val/<metric>, and a sample grid (rows: gray | generated | truth) of the first
    GRID_IMAGES as uint8 HWC. With `fid` (an extractor from colorray.metrics.fid) val/fid is
    added: generated vs the same val images, the real statistics cached in `fid_cache`.
    """
    was_training = G.training
    G.eval()
    loader = make_loader(shards, "val", 64, num_workers=0, shuffle=False, drop_last=False)
    key = json.dumps(read_manifest(shards)["splits"]["val"], sort_keys=True) if fid is not None else ""
    acc = MetricAccumulator(fid=fid, fid_cache=fid_cache, fid_key=key)
    grid = None
    for batch in loader:
        L, ab = rgb_uint8_to_lab(batch["rgb"][: max_images - acc.n], device)
        rgb_fake = acc.update(L, G(L).float(), ab)
        if grid is None:
            k = min(GRID_IMAGES, len(L))
            rows = [lab_to_rgb_normalized(L[:k], torch.zeros_like(ab[:k])), rgb_fake[:k],
                    lab_to_rgb_normalized(L[:k], ab[:k])]
            grid = torch.cat([torch.cat(list(r), 2) for r in rows], 1)
            grid = to_uint8(grid).cpu().numpy()
        if acc.n >= max_images:
            break
    G.train(was_training)
    return {f"val/{k}": v for k, v in acc.result().items()}, grid


def train_local(params: Params, shards: str | Path, out: str | Path, device: str = "cpu",
                max_iters: int | None = None, max_seconds: float | None = None,
                resume: bool = True, log: Callable[[str], None] = print, log_every: int = 10,
                init: Path | None = None) -> GANTrainer:
    """Train until `train.iters` (or `max_iters`, or `max_seconds`); checkpoint to `out`. Every
    `log_every` iterations: the metrics, the time spent and an estimate of the time left.
    init: the init stage's models/init.pt for train.init_from (without it, resolved into `out`)."""
    out, shards = Path(out), location(shards)
    ckpt = out / CHECKPOINT
    weights = None
    if params.train.init_from is not None:  # a fine-tuning: the starting model's weights (train.init_from)
        weights, _ = init_from.prepare(params.train.init_from, init, out, None)
        params = init_from.inherit(params, weights)  # what the run takes over from it (its chroma gain)
    if resume and ckpt.exists():
        trainer = load_checkpoint(ckpt, device, log=log)
        check_resumable(trainer.params, params, ckpt)
        log(f"resumed from {ckpt} at iteration {trainer.iter}")
    else:
        trainer = GANTrainer(params, device, log=log)
        if weights is not None:
            init_from.apply(trainer, init_from.load(weights), log)
    t, loading = params.train, params.loader
    loader = make_loader(shards, "train", t.batch_size, num_workers=loading.num_workers, seed=t.seed,
                         dataset_size=params.data.dataset_size, shuffle_buffer=loading.shuffle_buffer, flip=loading.flip,
                         pin_memory=torch.device(device).type == "cuda")
    stream = batch_stream(loader, trainer.data_position)
    stop, first = min(t.iters, max_iters or t.iters), trainer.iter
    start, images = time.perf_counter(), 0
    history = []
    while trainer.iter < stop:
        metrics, read, _ = next_iteration(trainer, stream, device)
        images += read
        elapsed = time.perf_counter() - start
        if trainer.iter % t.checkpoint_every == 0 or trainer.iter == stop:
            trainer.save(ckpt)
        if trainer.iter % log_every == 0 or trainer.iter == stop:
            metrics = {**metric_values(metrics), "img/s": images / elapsed}
            history.append({"iter": trainer.iter, **metrics})
            left = (stop - trainer.iter) * elapsed / max(1, trainer.iter - first)
            log(f"iter {trainer.iter}/{stop} ({format_seconds(elapsed)} elapsed, ~{format_seconds(left)} left): "
                + ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())))
        if max_seconds is not None and elapsed > max_seconds:
            trainer.save(ckpt)
            log(f"time budget of {max_seconds:.0f} s reached at iteration {trainer.iter}")
            break
    write_json_atomic(out / "history.json", history)
    return trainer


# What may change when a checkpoint is continued: how long to train, and where and on which
# resources Ray runs it (a run started on a cluster can go on on a laptop). Nothing that
# changes the arithmetic: not even ray.num_workers (BatchNorm statistics are per rank).
RESUME_FREE = {"train.iters", "train.resume", "ray.storage_path", "ray.placement_strategy",
               "ray.cpus_per_worker", "ray.gpus_per_worker", "ray.max_failures"}


def check_resumable(saved: Params, requested: Params, path: Path) -> None:
    """A checkpoint continues only the run it came from: any changed parameter but those in
    RESUME_FREE is an error naming the keys."""
    a, b = flatten(saved.model_dump(mode="json")), flatten(requested.model_dump(mode="json"))
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in RESUME_FREE)
    if changed:
        raise ValueError(f"{path} was trained with other parameters ({', '.join(changed[:5])}"
                         f"{' ...' if len(changed) > 5 else ''}); use another output folder or --fresh")
