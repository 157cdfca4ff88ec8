"""The shard stage: fetched files -> webdataset tars of uint8 RGB chunks + manifest.json.

Layout of the output folder::

    train-000000.tar  train-000001.tar ...  val-000000.tar  test-000000.tar  manifest.json

Each tar record is one *chunk* of up to `data.chunk_size` images of one split: `npy` holds a
(n, S, S, 3) uint8 array, `json` their keys and labels. Chunks, not single images, because
per-sample Python overhead dominates loading at 64 px (docs/benchmarks.md); the loader shuffles
across chunks in a buffer. The images are stored once, as RGB; Lab is computed on the
training device.

Determinism: the split of an item is a hash of its key (or group), and the items of a split
are written in hash order, so the same inputs and parameters give byte-identical shards,
and the first N training samples are a uniform random subset (`data.dataset_size`).
Atomicity: shards are written under temporary names inside a staging folder, renamed when
complete; the staging folder replaces the output folder at the very end, manifest last
(`replace_dir`: a swap killed half-way is finished by the next run). An output folder that
holds no manifest.json is not colorray's and is never replaced.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import io
import json
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import webdataset as wds
from tqdm import tqdm

from colorray.atomic import check_replaceable, publish, recover_dir, replace_dir, write_json_atomic
from colorray.config import DataParams
from colorray.data.decode import BadImage, decode_image, mean_chroma, resize_center_crop
from colorray.data.sources import PROVENANCE, Item, folder_file_problem, get_source

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
TAR_MTIME = 0.0  # fixed member timestamps: identical inputs give byte-identical tars
# Parameters that change what the shard stage writes (all recorded in the manifest).
SHARD_PARAMS = ("source", "url", "sha256", "path", "image_size", "val_fraction", "test_fraction",
                "split_seed", "subset_fraction", "categories", "min_chroma", "chunk_size",
                "shard_max_mb")


def unit_hash(*parts: str) -> float:
    """A deterministic number in [0, 1) from strings (stable across runs and machines)."""
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(item: Item, cfg: DataParams) -> str:
    if item.split in SPLITS:
        return item.split
    u = unit_hash(cfg.split_seed, "split", item.group or item.key)
    v, t = cfg.val_fraction, cfg.test_fraction
    if item.split is None:
        return "test" if u < t else "val" if u < t + v else "train"
    if item.split == "heldout":  # an official held-out set, divided between val and test
        return "val" if u < (v / (v + t) if v + t > 0 else 0.5) else "test"
    if item.split == "trainval":  # an official training set when the official test is separate
        return "val" if u < v else "train"
    raise ValueError(f"{item.key}: unknown split hint {item.split!r}")


@functools.lru_cache(maxsize=16)
def _decode_cached(path: str) -> np.ndarray:
    # Many crops come from one photo (skimage source): decode each photo once per worker.
    return decode_image(Path(path).read_bytes())


def read_image_file(path: Path, follow_links: bool = False) -> bytes:
    """The bytes of one input file, checked by its metadata before anything is read."""
    try:
        problem = folder_file_problem(path, follow_links)
        if problem is not None:
            raise BadImage(problem)
        return path.read_bytes()
    except OSError as e:
        raise BadImage(f"unreadable file ({e.strerror or e})") from None


def prepare(item: Item, image_size: int, min_chroma: float) -> np.ndarray:
    """Decode, crop and resize one item to (S, S, 3) uint8, or raise BadImage with the reason."""
    if item.crop is None:
        rgb = decode_image(read_image_file(Path(item.path)))
    else:
        top, left, side, flip = item.crop
        rgb = _decode_cached(item.path)[top:top + side, left:left + side]
        rgb = rgb[:, ::-1] if flip else rgb
    rgb = resize_center_crop(np.ascontiguousarray(rgb), image_size)
    if min_chroma > 0:
        chroma = mean_chroma(rgb)
        if chroma < min_chroma:
            raise BadImage(f"near-grayscale (mean chroma {chroma:.2f} < data.min_chroma {min_chroma})")
    return rgb


def _prepare_task(args):
    item, image_size, min_chroma = args
    try:
        return prepare(item, image_size, min_chroma), None
    except BadImage as e:
        return None, str(e)
    except MemoryError:
        return None, "out of memory while preparing it"
    except Exception as e:  # one file's failure drops that file, never the stage
        return None, f"cannot prepare it ({type(e).__name__}: {e})"


def _prepare_chunk(chunk):
    return [_prepare_task(args) for args in chunk]


def _prepared(tasks, workers: int, chunk: int = 32):
    """`_prepare_task` over `tasks`, in order, in `workers` processes. At most 2 chunks a worker
    are in flight (memory stays bounded however fast the workers are), and a worker that dies
    (killed for memory) stops the stage with the files it held, never hangs it."""
    if workers <= 1:
        yield from map(_prepare_task, tasks)
        return
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    tasks = iter(tasks)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        pending = collections.deque()
        while True:
            while len(pending) < 2 * workers and (batch := list(itertools.islice(tasks, chunk))):
                pending.append((batch, pool.submit(_prepare_chunk, batch)))
            if not pending:
                return
            batch, future = pending.popleft()
            try:
                yield from future.result()
            except BrokenProcessPool:  # the dead worker's chunk is one of those in flight
                held = list(dict.fromkeys(item.path for b in [batch, *(b for b, _ in pending)] for item, _, _ in b))
                raise RuntimeError(f"a decoding process died (killed for memory?) on one of: {', '.join(held[:10])}"
                                   f"{f' and {len(held) - 10} more' if len(held) > 10 else ''}") from None


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


class SplitWriter:
    """Groups images into chunks and chunks into size-bounded tars, each renamed when complete."""

    def __init__(self, folder: Path, split: str, chunk_size: int, max_bytes: int):
        self.folder, self.split = folder, split
        self.chunk_size, self.max_bytes = chunk_size, max_bytes
        self.images: list[np.ndarray] = []
        self.meta: list[tuple[str, str]] = []
        self.shards: list[dict] = []
        self.n_chunks = 0
        self._tar = self._file = None

    def add(self, key: str, label: str, rgb: np.ndarray) -> None:
        self.images.append(rgb)
        self.meta.append((key, label))
        if len(self.images) == self.chunk_size:
            self._flush_chunk()

    def _flush_chunk(self) -> None:
        if not self.images:
            return
        record = {
            "__key__": f"{self.split}-{self.n_chunks:08d}",
            "npy": _npy_bytes(np.stack(self.images)),
            "json": json.dumps({"keys": [k for k, _ in self.meta],
                                "labels": [lab for _, lab in self.meta]}).encode(),
        }
        size = len(record["npy"]) + len(record["json"]) + 3 * 512
        current = self.shards[-1] if self._tar is not None else None
        if current is None or (current["chunks"] and current["bytes"] + size > self.max_bytes):
            self._close_shard()
            self._open_shard()
            current = self.shards[-1]
        self._tar.write(record)
        current["chunks"].append(len(self.images))
        current["count"] += len(self.images)
        current["bytes"] += size
        self.n_chunks += 1
        self.images, self.meta = [], []

    def _open_shard(self) -> None:
        name = f"{self.split}-{len(self.shards):06d}.tar"
        self._file = open(self.folder / f".{name}.tmp", "wb")
        self._tar = wds.TarWriter(self._file, mtime=TAR_MTIME)
        self.shards.append({"name": name, "count": 0, "chunks": [], "bytes": 0})

    def _close_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()  # also closes the file
        name = self.shards[-1]["name"]
        publish(self.folder / f".{name}.tmp", self.folder / name)
        self.shards[-1]["bytes"] = (self.folder / name).stat().st_size
        self._tar = self._file = None

    def close(self) -> list[dict]:
        self._flush_chunk()
        self._close_shard()
        return self.shards


def write_shards(cfg: DataParams, raw: Path, out: Path, workers: int | None = None,
                 progress: bool = True) -> dict:
    """Shard the fetched dataset in `raw` into `out` (replaced atomically). Returns the manifest."""
    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise FileNotFoundError(f"{raw}: no fetched data; run the fetch stage first")
    listing = get_source(cfg.source).list_items(raw, cfg)
    if not listing.items:
        raise ValueError(f"{raw}: source {cfg.source!r} found no input images there")
    keys = [it.key for it in listing.items]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{raw}: source {cfg.source!r} listed duplicate item keys")

    in_subset = [it for it in listing.items
                 if cfg.subset_fraction >= 1.0 or unit_hash(cfg.split_seed, "subset", it.key) < cfg.subset_fraction]
    by_split: dict[str, list[Item]] = {s: [] for s in SPLITS}
    for it in in_subset:
        by_split[assign_split(it, cfg)].append(it)
    for s in SPLITS:  # hash order: reproducible, and every prefix is a uniform random subset
        by_split[s].sort(key=lambda it: unit_hash(cfg.split_seed, "order", it.key))
    ordered = [(s, it) for s in SPLITS for it in by_split[s]]

    recover_dir(out)
    check_replaceable(out, MANIFEST)
    stage = out.with_name(out.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    max_bytes = int(cfg.shard_max_mb * 2**20)
    writers = {s: SplitWriter(stage, s, cfg.chunk_size, max_bytes) for s in SPLITS}
    dropped = []
    tasks = ((it, cfg.image_size, cfg.min_chroma) for _, it in ordered)
    results = _prepared(tasks, workers or os.cpu_count() or 1)
    bar = tqdm(total=len(ordered), unit="img", desc="shard", disable=not progress)
    for (split, item), (rgb, reason) in zip(ordered, results):
        if rgb is None:
            dropped.append({"key": item.key, "path": os.path.relpath(item.path, raw), "reason": reason})
        else:
            writers[split].add(item.key, item.label, rgb)
        bar.update()
    bar.close()
    shards = {s: w.close() for s, w in writers.items()}

    provenance_file = raw / PROVENANCE
    manifest = {
        "version": MANIFEST_VERSION,
        "source": cfg.source,
        "provenance": json.loads(provenance_file.read_text()) if provenance_file.exists() else None,
        "params": {k: getattr(cfg, k) for k in SHARD_PARAMS},
        "image_size": cfg.image_size,
        "inputs": len(listing.items),
        "outside_subset": len(listing.items) - len(in_subset),
        "kept": sum(sh["count"] for v in shards.values() for sh in v),
        "dropped": dropped,
        "ignored": listing.ignored,
        "labels": sorted({it.label for it in in_subset if it.label}),
        "splits": {s: {"count": sum(sh["count"] for sh in shards[s]), "shards": shards[s]}
                   for s in SPLITS},
    }
    write_json_atomic(stage / MANIFEST, manifest, sort_keys=True)
    replace_dir(stage, out)
    return manifest


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no manifest; run the shard stage (dvc repro shard)") from None
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{path}: manifest version {manifest.get('version')}, expected {MANIFEST_VERSION}; re-run the shard stage")
    return manifest
