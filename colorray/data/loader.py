"""Stream shards into batches of uint8 RGB, split disjointly by rank and by loader worker.

The manifest says how many samples each shard holds, so every epoch is planned up front
(`plan_epoch`, a pure function): the split's samples, in shard order (optionally only the
first `dataset_size`), are cut into per-shard segments; the segment order is shuffled with
a seed shared by all ranks; the resulting sequence is cut into `world_size` equal,
contiguous ranges, and each rank's range into batch-aligned ranges for its loader workers.
So ranks and workers see disjoint samples, read only the shards they need, and every rank
yields the same number of batches, however uneven the shards are (a rank with fewer would
leave the others waiting in an all-reduce forever).

Inside a worker, the shards are read from their folder or URL and decoded
(`colorray.data.shards.read_shard`), go through a shuffle buffer and are cut into batches;
Lab conversion happens later, batched, on the training device (`colorray.color`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from colorray.data import storage
from colorray.data.shards import read_manifest, read_shard


@dataclass(frozen=True)
class Piece:
    shard: str  # file name inside the shard folder
    start: int  # sample offsets inside that shard, [start, stop)
    stop: int


def _split_range(n: int, parts: int, index: int) -> tuple[int, int]:
    """The index-th of `parts` near-equal contiguous ranges of range(n)."""
    return n * index // parts, n * (index + 1) // parts


def _pieces(segments: list[Piece], start: int, stop: int) -> list[Piece]:
    """The parts of the concatenated `segments` that fall in [start, stop), wrapping around."""
    total = sum(s.stop - s.start for s in segments)
    out, pos = [], 0
    while start < stop:
        lo = start % total
        pos = 0
        for seg in segments:
            n = seg.stop - seg.start
            if pos + n > lo:
                take = min(pos + n - lo, stop - start)
                a = seg.start + lo - pos
                out.append(Piece(seg.shard, a, a + take))
                start += take
                lo += take
                if start >= stop:
                    break
            pos += n
    return out


def plan_epoch(shards: list[dict], *, batch_size: int, rank: int = 0, world_size: int = 1,
               worker: int = 0, num_workers: int = 1, epoch: int = 0, seed: int = 0,
               shuffle: bool = True, drop_last: bool = True, dataset_size: int | None = None
               ) -> tuple[list[Piece], int]:
    """The pieces of shards one (rank, worker) reads this epoch, and its number of batches.

    drop_last=True: every rank gets the same number of full batches (training).
    drop_last=False: ranks are padded by wrapping around, as DistributedSampler does, so all
    samples are seen and every rank still yields the same number of batches (evaluation).
    """
    segments, remaining = [], dataset_size
    for sh in shards:
        n = sh["count"] if remaining is None else min(sh["count"], remaining)
        if n > 0:
            segments.append(Piece(sh["name"], 0, n))
        if remaining is not None:
            remaining -= n
    total = sum(s.stop - s.start for s in segments)
    if total == 0:
        return [], 0
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(len(segments))
        segments = [segments[i] for i in order]
    if drop_last:
        per_rank = (total // world_size) // batch_size * batch_size
        if per_rank == 0:
            raise ValueError(f"{total} samples cannot fill one batch of {batch_size} on each of "
                             f"{world_size} ranks; lower the batch size or add data")
    else:
        per_rank = math.ceil(total / world_size)
    n_batches = math.ceil(per_rank / batch_size)
    b0, b1 = _split_range(n_batches, num_workers, worker)
    start = rank * per_rank + b0 * batch_size
    stop = rank * per_rank + min(b1 * batch_size, per_rank)
    return _pieces(segments, start, stop), b1 - b0


def batches_per_epoch(shards: list[dict], batch_size: int, world_size: int = 1,
                      drop_last: bool = True, dataset_size: int | None = None) -> int:
    """Batches each rank yields per epoch (identical on every rank)."""
    return plan_epoch(shards, batch_size=batch_size, world_size=world_size,
                      drop_last=drop_last, dataset_size=dataset_size, shuffle=False)[1]


class ShardStream(IterableDataset):
    """Yields dicts {"rgb": (B, S, S, 3) uint8 tensor, "key": [...], "label": [...]}.

    Each pass over the stream is the next epoch (its own shuffle), in the main process and
    in every persistent loader worker alike, so they stay in step without messages.
    `set_epoch(e)` sets the epoch of the next pass: call it before the first pass (when
    resuming) so the loader workers start from it.
    """

    def __init__(self, shards: str | Path, split: str, batch_size: int, *, rank: int = 0,
                 world_size: int = 1, seed: int = 0, shuffle: bool = True, drop_last: bool = True,
                 dataset_size: int | None = None, shuffle_buffer: int = 2048, flip: bool = False):
        self.location = storage.location(shards)  # a URL, or absolute: Ray workers run elsewhere
        self.manifest = read_manifest(self.location)
        if split not in self.manifest["splits"]:
            raise KeyError(f"{self.location}: no split {split!r} in the manifest")
        self.shards = self.manifest["splits"][split]["shards"]
        self.split, self.batch_size = split, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.dataset_size, self.shuffle_buffer = dataset_size, shuffle_buffer
        self.flip = flip  # augmentation: each sample mirrored left-right with probability 1/2
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return batches_per_epoch(self.shards, self.batch_size, self.world_size,
                                 self.drop_last, self.dataset_size)

    def _plan(self, epoch: int, worker: int, num_workers: int) -> tuple[list[Piece], int]:
        return plan_epoch(self.shards, batch_size=self.batch_size, rank=self.rank,
                          world_size=self.world_size, worker=worker, num_workers=num_workers,
                          epoch=epoch, seed=self.seed, shuffle=self.shuffle,
                          drop_last=self.drop_last, dataset_size=self.dataset_size)

    def _read(self, pieces: list[Piece]):
        """Yield (images, keys, labels) for the samples of `pieces`, in order."""
        for piece in pieces:
            for images, keys, labels, _ in read_shard(self.location, self.manifest, piece.shard,
                                                      piece.start, piece.stop):
                yield images, keys, labels

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        epoch, self.epoch = self.epoch, self.epoch + 1
        pieces, n_batches = self._plan(epoch, worker, num_workers)
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker])
        buf_img, buf_key, buf_lab, buffered = [], [], [], 0
        emitted = 0

        def drain(final: bool):
            nonlocal buf_img, buf_key, buf_lab, buffered, emitted
            images = np.concatenate(buf_img)
            keys = [k for ks in buf_key for k in ks]
            labels = [lab for ls in buf_lab for lab in ls]
            order = rng.permutation(len(images)) if self.shuffle else np.arange(len(images))
            n_full = len(images) // self.batch_size
            cut = len(images) if final else n_full * self.batch_size
            for b in range(0, cut, self.batch_size):
                idx = order[b:b + self.batch_size]
                batch = images[idx]  # a copy (fancy indexing): mirroring it leaves the buffer as is
                if self.flip:
                    mirrored = rng.random(len(idx)) < 0.5
                    batch[mirrored] = batch[mirrored, :, ::-1]
                yield {"rgb": torch.from_numpy(batch), "key": [keys[i] for i in idx],
                       "label": [labels[i] for i in idx]}
                emitted += 1
            rest = order[cut:]
            buf_img = [images[rest]] if len(rest) else []
            buf_key = [[keys[i] for i in rest]]
            buf_lab = [[labels[i] for i in rest]]
            buffered = len(rest)

        for images, keys, labels in self._read(pieces):
            buf_img.append(images)
            buf_key.append(keys)
            buf_lab.append(labels)
            buffered += len(images)
            if buffered >= max(self.shuffle_buffer, self.batch_size):
                yield from drain(final=False)
        if buffered:
            yield from drain(final=True)
        if emitted != n_batches:  # a shard shorter than its manifest says: fail loudly
            raise RuntimeError(f"{self.location}: rank {self.rank} worker {worker} produced "
                               f"{emitted} batches, the plan says {n_batches}; shards and "
                               "manifest disagree (re-run the shard stage)")


def make_loader(shards: str | Path, split: str, batch_size: int, *, num_workers: int = 2,
                pin_memory: bool = False, **kwargs) -> DataLoader:
    """A DataLoader over `ShardStream` (batching happens in the dataset).

    Workers persist across epochs: starting them anew each epoch cost a third of the
    loader's CPU time (benchmarks/loader.py).
    """
    dataset = ShardStream(shards, split, batch_size, **kwargs)
    # Its own generator: creating worker iterators must not consume the global RNG that
    # training uses (resumed runs must match uninterrupted ones bit for bit).
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers else None,
                      generator=torch.Generator().manual_seed(dataset.seed))


def load_split(shards: str | Path, split: str, max_images: int | None = None) -> tuple[torch.Tensor, list[str], list[str]]:
    """A whole split in memory, in the manifest's (fixed) order: (N, H, W, 3) uint8 RGB, keys
    and labels. For evaluation, which needs the same images every time. `max_images`: that
    many, evenly spaced over the split (its first images may all come from one class)."""
    loader = make_loader(shards, split, 256, num_workers=0, shuffle=False, drop_last=False)
    rgb, keys, labels = [], [], []
    for batch in loader:
        rgb.append(batch["rgb"])
        keys += batch["key"]
        labels += batch["label"]
    if not rgb:
        raise ValueError(f"{shards}: the {split} split is empty")
    rgb = torch.cat(rgb)
    if max_images is not None and max_images < len(rgb):
        idx = np.linspace(0, len(rgb) - 1, max_images).round().astype(int)
        rgb, keys, labels = rgb[idx], [keys[i] for i in idx], [labels[i] for i in idx]
    return rgb, keys, labels
