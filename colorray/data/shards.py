"""The shard stage: fetched files -> standard webdataset shards + manifest.json.

Layout of the output folder::

    train-000000.tar.gz  train-000001.tar.gz ...  val-000000.tar.gz  test-000000.tar.gz  manifest.json

Each sample is one image, in webdataset's convention: ``<split>-<index>.jpg`` (or ``.webp``,
``.png``; `data.encoding`) and ``<split>-<index>.json`` with its key, label, source file and
split, so `wds.WebDataset(url).decode("rgb8")` and every other webdataset tool read them. The
default, JPEG at quality 95 with 4:4:4 chroma (4:2:0 would halve exactly the colour resolution
the model learns) in gzip-compressed tars, was chosen by measurement (docs/benchmarks.md):
4.9x smaller than raw pixels at 64 px, where tar headers are nearly half of a plain tar.
`data.encoding: raw` keeps the older records for starved CPUs: chunks of `data.chunk_size`
images as one (n, S, S, 3) uint8 ``.npy``.

Determinism: the split of an item is a hash of its key (or group), and the items of a split
are written in hash order, so the same inputs and parameters give byte-identical shards,
and the first N training samples are a uniform random subset (`data.dataset_size`).
Atomicity: shards are written under temporary names inside a staging folder, renamed when
complete; the staging folder replaces the output folder at the very end, manifest last
(`replace_dir`: a swap killed half-way is finished by the next run). An output folder without
colorray's ownership marker (`.colorray-output`, kind "shards") is not colorray's: neither it
nor a `.old`/`.partial` folder beside it is ever replaced or deleted.

Reading (`read_shard`) goes through `colorray.data.storage`, so a shard folder can also be a
URL, and `colorray.data.tarstream` (a USTAR reader several times faster than tarfile).
"""

from __future__ import annotations

import collections
import functools
import gzip
import hashlib
import itertools
import io
import json
import multiprocessing
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from colorray.atomic import publish, replace_dir, staging_dir, write_json_atomic
from colorray.config import IMAGE_SIZES, DataParams
from colorray.data import storage
from colorray.redact import redact
from colorray.data.decode import BadImage, decode_image, mean_chroma, resize_center_crop
from colorray.data.sources import PROVENANCE, Item, folder_file_problem, get_source
from colorray.data.tarstream import ShardFormatError, members

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
MANIFEST_VERSION = 2  # 1: raw chunks only, still read
TAR_MTIME = 0  # fixed member timestamps (an int: a float adds a PAX header to every member)
# Parameters that change what the shard stage writes (all recorded in the manifest).
SHARD_PARAMS = ("source", "url", "sha256", "path", "image_size", "val_fraction", "test_fraction",
                "split_seed", "subset_fraction", "categories", "min_chroma", "encoding",
                "jpeg_quality", "compression", "chunk_size", "shard_max_mb")
EXTENSIONS = {"jpeg": "jpg", "webp": "webp", "png": "png"}  # data.encoding -> file extension
BLOCK_IMAGES = 64  # decoded images are handed to the loader in blocks this size


@dataclass(frozen=True)
class ShardFormat:
    """How the samples of a shard folder are stored (manifest["format"])."""

    encoding: str = "raw"  # jpeg | webp | png | raw
    compression: str = "none"  # gzip | none
    jpeg_quality: int | None = None

    @classmethod
    def of(cls, cfg: DataParams) -> "ShardFormat":
        return cls(cfg.encoding, cfg.compression, cfg.jpeg_quality if cfg.encoding == "jpeg" else None)

    @property
    def suffix(self) -> str:
        return ".tar.gz" if self.compression == "gzip" else ".tar"


def encode_image(rgb: np.ndarray, fmt: ShardFormat) -> bytes:
    """One (S, S, 3) uint8 image in `fmt`'s encoding (deterministic: same pixels, same bytes)."""
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(rgb)
    if fmt.encoding == "jpeg":  # 4:4:4: full-resolution chroma; optimize: smaller, same pixels
        img.save(buf, "JPEG", quality=fmt.jpeg_quality, subsampling=0, optimize=True)
    elif fmt.encoding == "webp":
        img.save(buf, "WEBP", lossless=True, exact=True)
    elif fmt.encoding == "png":
        img.save(buf, "PNG", compress_level=6)
    else:
        raise ValueError(f"encoding {fmt.encoding!r} has no image files")
    return buf.getvalue()


def decode_sample(data: bytes, ext: str, size: int, where: str) -> np.ndarray:
    """A stored image back to (size, size, 3) uint8 RGB. The header is checked first: a shard
    from a network cannot make the decoder allocate more than the manifest's image size."""
    if ext == "jpg":
        import simplejpeg  # libjpeg-turbo, 3.5x faster than PIL here and the same pixels

        try:
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
            if (h, w) == (size, size):
                return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError as e:
            raise ShardFormatError(f"{where}: cannot decode its JPEG ({e})") from None
    else:
        from PIL import Image

        try:
            img = Image.open(io.BytesIO(data), formats=[{"png": "PNG", "webp": "WEBP"}[ext]])
            w, h = img.size
            if (h, w) == (size, size):
                return np.asarray(img.convert("RGB"))
        except (OSError, KeyError) as e:
            raise ShardFormatError(f"{where}: cannot decode its {ext} ({e})") from None
    raise ShardFormatError(f"{where}: a {w}x{h} image where the manifest says {size}x{size}")


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
    """(the image as stored: RGB array for raw, else its encoded bytes; None) or (None, reason)."""
    item, image_size, min_chroma, fmt = args
    try:
        rgb = prepare(item, image_size, min_chroma)
        return (rgb if fmt.encoding == "raw" else encode_image(rgb, fmt)), None
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
            try:  # a broken pool shows in result() or in the next submit()
                while len(pending) < 2 * workers and (batch := list(itertools.islice(tasks, chunk))):
                    pending.append((batch, None))
                    pending[-1] = (batch, pool.submit(_prepare_chunk, batch))
                if not pending:
                    return
                results = pending[0][1].result()
            except BrokenProcessPool:  # the dead worker's chunk is one of those in flight
                held = list(dict.fromkeys(item.path for b, _ in pending for item, *_ in b))
                raise RuntimeError(f"a decoding process died (killed for memory?) on one of: {', '.join(held[:10])}"
                                   f"{f' and {len(held) - 10} more' if len(held) > 10 else ''}") from None
            pending.popleft()
            yield from results


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _tar_bytes(record: dict) -> int:
    """The size of `record`'s members in an uncompressed tar: a header and whole blocks each."""
    return sum(512 + -(-len(v) // 512) * 512 for k, v in record.items() if k != "__key__")


def _tar_file_bytes(member_bytes: int) -> int:
    """An uncompressed tar's size: its members, the end-of-archive blocks, whole 10 KiB records."""
    return -(-(member_bytes + 1024) // 10240) * 10240


class SplitWriter:
    """Writes the samples of one split into size-bounded tars, each renamed when complete.

    Encoded formats: one record per image. raw: images are grouped into chunks first.
    `shard_max_mb` bounds the uncompressed size (a gzipped shard is smaller).
    """

    def __init__(self, folder: Path, split: str, fmt: ShardFormat, chunk_size: int, max_bytes: int):
        self.folder, self.split, self.fmt = folder, split, fmt
        self.chunk_size, self.max_bytes = chunk_size, max_bytes
        self.pending: list[tuple[str, str, str, np.ndarray]] = []  # raw: the chunk being filled
        self.shards: list[dict] = []
        self.n_records = 0
        self._tar = self._gz = self._file = None

    def add(self, key: str, label: str, source: str, stored) -> None:
        """One image: its RGB array (raw) or its encoded bytes."""
        if self.fmt.encoding != "raw":
            meta = {"key": key, "label": label, "source": source, "split": self.split}
            self._write({"__key__": f"{self.split}-{self.n_records:08d}",
                         EXTENSIONS[self.fmt.encoding]: stored, "json": json.dumps(meta).encode()}, 1)
            return
        self.pending.append((key, label, source, stored))
        if len(self.pending) == self.chunk_size:
            self._flush_chunk()

    def _flush_chunk(self) -> None:
        if not self.pending:
            return
        keys, labels, sources, images = zip(*self.pending)
        self._write({"__key__": f"{self.split}-{self.n_records:08d}",
                     "npy": _npy_bytes(np.stack(images)),
                     "json": json.dumps({"keys": keys, "labels": labels, "sources": sources}).encode()},
                    len(images))
        self.pending = []

    def _write(self, record: dict, n_images: int) -> None:
        size = _tar_bytes(record)
        current = self.shards[-1] if self._tar is not None else None
        if current is None or (current["count"] and _tar_file_bytes(current["bytes"] + size) > self.max_bytes):
            self._close_shard()
            self._open_shard()
            current = self.shards[-1]
        self._tar.write(record)
        if self.fmt.encoding == "raw":
            current["chunks"].append(n_images)
        current["count"] += n_images
        current["bytes"] += size
        self.n_records += 1

    def _open_shard(self) -> None:
        name = f"{self.split}-{len(self.shards):06d}{self.fmt.suffix}"
        self._file = open(self.folder / f".{name}.tmp", "wb")
        stream = self._file
        if self.fmt.compression == "gzip":  # no name, mtime 0: byte-identical reruns
            stream = self._gz = gzip.GzipFile(fileobj=self._file, mode="wb", filename="", mtime=0)
        # Imported here, not at the top: webdataset imports torch (seconds), which the stage's
        # checks of its inputs and output folder need not wait for.
        import webdataset as wds

        self._tar = wds.TarWriter(stream, mtime=TAR_MTIME)
        self.shards.append({"name": name, "count": 0, "bytes": 0})
        if self.fmt.encoding == "raw":
            self.shards[-1]["chunks"] = []

    def _close_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()  # writes the end-of-archive blocks; the streams under it stay open
        if self._gz is not None:
            self._gz.close()
        self._file.close()
        name = self.shards[-1]["name"]
        publish(self.folder / f".{name}.tmp", self.folder / name)
        self.shards[-1]["bytes"] = (self.folder / name).stat().st_size
        self._tar = self._gz = self._file = None

    def close(self) -> list[dict]:
        self._flush_chunk()
        self._close_shard()
        return self.shards

    def abort(self) -> None:
        """Close the open shard's streams without publishing it (it stays a .tmp file)."""
        if self._tar is not None:
            self._tar.close()
            for stream in (self._gz, self._file):
                if stream is not None:
                    stream.close()
            self._tar = self._gz = self._file = None


OWNER_KIND = "shards"  # the ownership marker's kind (colorray.atomic)


def _staging(out: Path) -> Path:
    """An empty staging folder `out.partial`, after checking that `out` (and any `.old` or
    `.partial` beside it) is colorray's shard folder or absent."""
    return staging_dir(out, ".partial", OWNER_KIND)


def _publish(stage: Path, out: Path, manifest: dict, fmt: ShardFormat, shards: dict[str, list[dict]]) -> dict:
    """Complete `manifest` with the written shards and put the staging folder in place."""
    manifest.update({
        "version": MANIFEST_VERSION,
        "format": {"encoding": fmt.encoding, "compression": fmt.compression, "jpeg_quality": fmt.jpeg_quality},
        "kept": sum(sh["count"] for v in shards.values() for sh in v),
        "splits": {s: {"count": sum(sh["count"] for sh in shards[s]), "shards": shards[s]} for s in SPLITS},
    })
    write_json_atomic(stage / MANIFEST, manifest, sort_keys=True)
    replace_dir(stage, out, OWNER_KIND)
    return manifest


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

    stage = _staging(out)
    fmt = ShardFormat.of(cfg)
    writers = {s: SplitWriter(stage, s, fmt, cfg.chunk_size, int(cfg.shard_max_mb * 2**20)) for s in SPLITS}
    dropped = []
    tasks = ((it, cfg.image_size, cfg.min_chroma, fmt) for _, it in ordered)
    results = _prepared(tasks, workers or os.cpu_count() or 1)
    bar = tqdm(total=len(ordered), unit="img", desc="shard", disable=not progress)
    try:
        for (split, item), (stored, reason) in zip(ordered, results):
            source = os.path.relpath(item.path, raw)
            if stored is None:
                dropped.append({"key": item.key, "path": source, "reason": reason})
            else:
                writers[split].add(item.key, item.label, source, stored)
            bar.update()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    bar.close()

    provenance_file = raw / PROVENANCE
    manifest = {
        "source": cfg.source,
        "provenance": json.loads(provenance_file.read_text()) if provenance_file.exists() else None,
        "params": {k: redact(getattr(cfg, k)) for k in SHARD_PARAMS},  # no credential of data.url
        "image_size": cfg.image_size,
        "inputs": len(listing.items),
        "outside_subset": len(listing.items) - len(in_subset),
        "dropped": dropped,
        "ignored": listing.ignored,
        "labels": sorted({it.label for it in in_subset if it.label}),
    }
    return _publish(stage, out, manifest, fmt, {s: w.close() for s, w in writers.items()})


def convert_shards(src: str | Path, out: Path, cfg: DataParams, progress: bool = True) -> dict:
    """Re-encode the raw shards at `src` (a folder or URL) in `cfg`'s encoding into `out`: the
    stored pixels are encoded, the sources are not read again. Same samples, splits, order."""
    loc = storage.location(src)
    old_bytes = storage.read_bytes(loc, MANIFEST)
    old = parse_manifest(old_bytes, storage.file_url(loc, MANIFEST))
    if shard_format(old).encoding != "raw":
        raise ValueError(f"{loc}: holds {shard_format(old).encoding} shards; only raw shards convert "
                         "without loss (re-run the shard stage from the sources instead)")
    fmt = ShardFormat.of(cfg)
    if fmt.encoding == "raw":
        raise ValueError("converting raw shards to raw: choose --encoding jpeg, webp or png")
    out = Path(out)
    stage = _staging(out)
    max_bytes = int(cfg.shard_max_mb * 2**20)
    bar = tqdm(total=old["kept"], unit="img", desc="convert", disable=not progress)
    shards = {}
    for split in SPLITS:
        writer = SplitWriter(stage, split, fmt, cfg.chunk_size, max_bytes)
        for sh in old["splits"][split]["shards"]:
            for images, keys, labels, sources in read_shard(loc, old, sh["name"]):
                for rgb, key, label, source in zip(images, keys, labels, sources):
                    writer.add(key, label, source, encode_image(rgb, fmt))
                bar.update(len(images))
        shards[split] = writer.close()
    bar.close()
    manifest = {k: v for k, v in old.items() if k not in ("version", "format", "kept", "splits")}
    manifest["params"] = {**old["params"], **{k: getattr(cfg, k) for k in
                                              ("encoding", "jpeg_quality", "compression", "shard_max_mb")}}
    manifest["converted_from"] = {"location": redact(loc), "manifest_sha256": hashlib.sha256(old_bytes).hexdigest()}
    return _publish(stage, out, manifest, fmt, shards)


def parse_manifest(data: bytes, where: str) -> dict:
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise ShardFormatError(f"{where}: not a JSON manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("version") not in (1, MANIFEST_VERSION):
        version = manifest.get("version") if isinstance(manifest, dict) else None
        raise ShardFormatError(f"{where}: manifest version {version}, expected {MANIFEST_VERSION}; "
                               "re-run the shard stage")
    check_manifest(manifest, where)
    return manifest


MAX_SAMPLES = 1 << 31  # per split: far above any dataset here, far below what would overflow a plan


def check_manifest(manifest: dict, where: str) -> None:
    """A manifest may come from a URL: what the readers rely on is checked before any shard is
    opened. The image size is one the config allows (a reader decodes images of that size and
    refuses others), every split lists plain shard names with sample counts that add up."""
    def bad(what: str):
        raise ShardFormatError(f"{where}: {what}; not a manifest colorray wrote (re-run the shard stage)")

    size = manifest.get("image_size")
    if isinstance(size, bool) or size not in IMAGE_SIZES:
        bad(f"image_size {size!r} is not one of {', '.join(map(str, IMAGE_SIZES))}")
    shard_format(manifest)
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or set(splits) != set(SPLITS):
        bad(f"splits {sorted(splits) if isinstance(splits, dict) else splits!r}, expected {', '.join(SPLITS)}")
    for split, entry in splits.items():
        shards = entry.get("shards") if isinstance(entry, dict) else None
        count = entry.get("count") if isinstance(entry, dict) else None
        if not isinstance(shards, list) or not _count_ok(count):
            bad(f"split {split!r} has no shard list or a bad count ({count!r})")
        total = 0
        for sh in shards:
            name = sh.get("name") if isinstance(sh, dict) else None
            if not isinstance(name, str) or not storage.is_plain_name(name) or not _count_ok(sh.get("count")):
                bad(f"split {split!r}: shard entry {sh!r} needs a plain file name and a sample count")
            total += sh["count"]
        if total != count:
            bad(f"split {split!r}: its shards hold {total:,} samples, its count says {count:,}")


def _count_ok(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_SAMPLES


def read_manifest(shards: str | Path) -> dict:
    """The manifest of the shard folder or URL `shards`."""
    loc = storage.location(shards)
    try:
        data = storage.read_bytes(loc, MANIFEST)
    except storage.NotFound:
        raise FileNotFoundError(f"{storage.file_url(loc, MANIFEST)}: no manifest; run the shard stage "
                                "(dvc repro shard)") from None
    return parse_manifest(data, storage.file_url(loc, MANIFEST))


def shard_format(manifest: dict) -> ShardFormat:
    """The manifest's format (version 1 had none: raw chunks), checked: it may come from a URL."""
    try:
        fmt = ShardFormat(**manifest["format"]) if "format" in manifest else ShardFormat()
    except TypeError as e:
        raise ShardFormatError(f"manifest format {manifest.get('format')!r}: {e}") from None
    if fmt.encoding not in (*EXTENSIONS, "raw") or fmt.compression not in ("gzip", "none"):
        raise ShardFormatError(f"manifest format {manifest['format']!r}: unknown encoding or compression")
    return fmt


def _grouped(files, wanted: tuple[str, ...], where: str):
    """webdataset's samples: consecutive members that share a key (the name up to its first
    dot). Only the `wanted` extensions are kept (others are read past and dropped), and each at
    most once: a shard from a URL cannot make a reader hold many images under one key."""
    key, sample = None, {}
    for name, data in files:
        k, _, ext = name.partition(".")
        if k != key and sample:
            yield key, sample
            sample = {}
        key = k
        if ext not in wanted:
            continue
        if ext in sample:
            raise ShardFormatError(f"{where}: sample {k!r} has more than one .{ext} member; refused")
        sample[ext] = data
    if sample:
        yield key, sample


# The largest member a shard may hold, by encoding: a raw chunk of 4,096 images at 256 px is
# 805 MB; one encoded image of at most 256 x 256 px (or its JSON) is far below 16 MiB.
MAX_ENCODED_MEMBER_BYTES = 16 << 20


def read_shard(loc: str, manifest: dict, name: str, start: int = 0, stop: int | None = None):
    """Yield (images (n, S, S, 3) uint8, keys, labels, sources) for the samples [start, stop) of
    the shard `name` at `loc`, in order and in blocks; only those samples are decoded."""
    fmt, size = shard_format(manifest), manifest["image_size"]
    stop = float("inf") if stop is None else stop
    where = storage.file_url(loc, name)
    with storage.open_file(loc, name) as f:
        stream = gzip.GzipFile(fileobj=f, mode="rb") if fmt.compression == "gzip" else f
        if fmt.encoding == "raw":
            samples = _grouped(members(stream, where), ("npy", "json"), where)
        else:
            samples = _grouped(members(stream, where, max_member=MAX_ENCODED_MEMBER_BYTES),
                               (EXTENSIONS[fmt.encoding], "json"), where)
        try:
            if fmt.encoding == "raw":
                yield from _raw_blocks(samples, size, where, start, stop)
            else:
                yield from _encoded_blocks(samples, EXTENSIONS[fmt.encoding], size, where, start, stop)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # a corrupt or truncated gzip stream
            raise ShardFormatError(f"{where}: {type(e).__name__}: {e} (re-run the shard stage)") from None
        except (KeyError, ValueError, TypeError) as e:
            if isinstance(e, ShardFormatError):
                raise
            raise ShardFormatError(f"{where}: a malformed sample ({type(e).__name__}: {e})") from None


def _raw_blocks(samples, size, where, start, stop):
    offset = 0
    for key, files in samples:
        meta = json.loads(files["json"])
        n = len(meta["keys"])
        lo, hi = max(start, offset), min(stop, offset + n)
        if lo < hi:  # decode only the chunks the range overlaps
            images = np.load(io.BytesIO(files["npy"]), allow_pickle=False)
            if images.shape != (n, size, size, 3) or images.dtype != np.uint8:
                raise ShardFormatError(f"{where}: {key}: a {images.dtype} array of shape {images.shape}, "
                                       f"expected ({n}, {size}, {size}, 3) uint8")
            sources = meta.get("sources") or [""] * n  # version-1 shards did not record them
            a, b = lo - offset, hi - offset
            yield images[a:b], meta["keys"][a:b], meta["labels"][a:b], sources[a:b]
        offset += n
        if offset >= stop:
            return


def _encoded_blocks(samples, ext, size, where, start, stop):
    index, block = 0, []
    for key, files in samples:
        if index >= start:
            if ext not in files or "json" not in files:
                raise ShardFormatError(f"{where}: sample {key} lacks its .{ext} or .json (has {sorted(files)})")
            meta = json.loads(files["json"])
            block.append((decode_sample(files[ext], ext, size, f"{where}: {key}"),
                          meta["key"], meta["label"], meta.get("source", "")))
            if len(block) == BLOCK_IMAGES:
                yield _stack(block)
                block = []
        index += 1
        if index >= stop:
            break
    if block:
        yield _stack(block)


def _stack(block):
    images, keys, labels, sources = zip(*block)
    return np.stack(images), list(keys), list(labels), list(sources)
