"""Shard encodings and loader throughput: shards -> (L, ab) tensors, per encoding and image size,
against raw shards and the studies' JPEG folder + per-image rgb2lab.

    python benchmarks/loader.py [--sizes 64,256] [--encodings raw,jpeg,...] [--epochs 2] [--repeats 3]

Data: at 64 px the Tiny-ImageNet-200 mini set (../shared; its 10,100 training images are
64x64 JPEGs), else the embedded photos; at 256 px the embedded photos (Tiny-ImageNet would be
upsampled, which flatters every codec). Raw shards are written once from the sources; every
other encoding is made from them with `convert_shards` (`colorray shard --from`), so all
encodings hold the same pixels.

Per encoding:
  * bytes per image: the shards' size on disk over the images they hold (tar headers and
    gzip included), and how many times smaller than raw;
  * read + decode: CPU microseconds per image to read every shard and decode every sample in
    this process (`read_shard`), no DataLoader;
  * loader: samples per CPU-second (user + system time of the process and its loader worker)
    and per wall second through `make_loader` with 1 worker, Lab conversion included,
    batch 128; medians of --repeats alternating runs (the host drifts by up to 25%);
  * colour error: mean CIE76 delta E (Lab) of the decoded images against the raw pixels.
Targets (issue 18), default encoding: >= 3x smaller than raw at 64 px and >= 5x at 256 px;
>= 1,250 samples per CPU-second at 64 px and >= 0.7x raw's rate.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.color import rgb2lab
from torch.utils.data import DataLoader, Dataset

from colorray.color import rgb_to_lab, rgb_uint8_to_lab
from colorray.config import DataParams
from colorray.data.loader import load_split, make_loader
from colorray.data.shards import convert_shards, read_manifest, read_shard, write_shards
from colorray.data.sources import fetch_source

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT.parent / "shared" / "datasets" / "tiny-imagenet-200-mini.zip"
BATCH = 128
STUDIES = "PIL + rgb2lab (studies)"
# id -> (name, data params of the encoding); raw first: the others are converted from it
ENCODINGS = {
    "raw": ("raw", dict(encoding="raw", compression="none")),
    "jpeg": ("jpeg q95 4:4:4 + gzip (default)", dict(encoding="jpeg", compression="gzip", jpeg_quality=95)),
    "jpeg-tar": ("jpeg q95 4:4:4", dict(encoding="jpeg", compression="none", jpeg_quality=95)),
    "jpeg90": ("jpeg q90 4:4:4 + gzip", dict(encoding="jpeg", compression="gzip", jpeg_quality=90)),
    "webp": ("webp lossless + gzip", dict(encoding="webp", compression="gzip")),
    "png": ("png + gzip", dict(encoding="png", compression="gzip")),
}
DEFAULT = ENCODINGS["jpeg"][0]


class JpegFolderLab(Dataset):
    """The studies' loader: PIL decode and skimage rgb2lab, one image at a time."""

    def __init__(self, files, size):
        self.files, self.size = files, size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as img:
            rgb = np.asarray(img.convert("RGB").resize((self.size, self.size)))
        lab = torch.from_numpy(rgb2lab(rgb).astype(np.float32)).permute(2, 0, 1)
        return lab[:1] / 50.0 - 1.0, lab[1:] / 110.0


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped loader workers
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(make, epochs: int) -> tuple[float, float]:
    """(samples per wall second, per CPU-second) of `epochs` passes; CPU time includes workers."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    loader, to_lab = make()
    n = 0
    for _ in range(epochs):
        for batch in loader:
            L, ab = to_lab(batch)
            n += L.shape[0]
    wall = time.perf_counter() - t0
    del loader  # shuts the persistent workers down, so their CPU time is reaped and counted
    gc.collect()
    return n / wall, n / (cpu_seconds() - c0)


def read_decode_us(shards: Path) -> float:
    m = read_manifest(shards)
    t0, n = time.process_time(), 0
    for split in m["splits"].values():
        for sh in split["shards"]:
            for images, *_ in read_shard(str(shards), m, sh["name"]):
                n += len(images)
    return (time.process_time() - t0) / n * 1e6


def delta_e(shards: Path, truth: dict, n: int = 1000) -> float:
    """Mean CIE76 delta E over `n` training images, 100 at a time (memory stays small at 256 px)."""
    rgb, keys, _ = load_split(shards, "train", n)
    total = 0.0
    for i in range(0, len(rgb), 100):
        ref = torch.stack([truth[k] for k in keys[i:i + 100]])
        lab = [rgb_to_lab(x.permute(0, 3, 1, 2).double() / 255) for x in (rgb[i:i + 100], ref)]
        total += float(torch.linalg.vector_norm(lab[0] - lab[1], dim=1).sum(dim=(1, 2)).sum())
    return total / (len(rgb) * rgb.shape[1] * rgb.shape[2])


def prepare(size: int, work: Path, ids: list[str]) -> tuple[str, dict[str, Path], list[Path]]:
    tiny = size == 64 and MINI.exists()
    cfg = DataParams(source="tiny-imagenet", url=MINI.as_uri(), image_size=size) if tiny else DataParams(image_size=size)
    data = "tiny-imagenet mini" if tiny else "embedded photos"
    fetch_source(cfg, work / "raw", work / "downloads")
    shards = {}
    for name, fmt in (ENCODINGS[i] for i in ids):
        out = work / f"shards-{len(shards)}"
        t0 = time.perf_counter()
        if fmt["encoding"] == "raw":
            write_shards(cfg.model_copy(update=fmt), work / "raw", out, progress=False)
        else:
            convert_shards(shards["raw"], out, cfg.model_copy(update=fmt), progress=False)
        print(f"{size} px {name}: written in {time.perf_counter() - t0:.1f} s", flush=True)
        shards[name if fmt["encoding"] != "raw" else "raw"] = out
    if tiny:  # the studies read the original JPEGs
        files = sorted((work / "raw").rglob("train/*/images/*.JPEG"))
    else:  # the same training crops, written as JPEGs
        files, folder = [], work / "jpegs"
        folder.mkdir()
        rgb, keys, _ = load_split(shards["raw"], "train")
        for key, img in zip(keys, rgb.numpy()):
            files.append(folder / (key.replace("/", "_") + ".jpg"))
            Image.fromarray(img).save(files[-1], quality=95)
    return data, shards, files


def bench_size(size: int, args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data, shards, files = prepare(size, Path(tmp), ["raw"] + [i for i in args.encodings.split(",") if i != "raw"])
        kept = read_manifest(shards["raw"])["kept"]
        rgb, keys, _ = load_split(shards["raw"], "train")
        truth = dict(zip(keys, rgb))
        rows = {}
        for name, folder in shards.items():
            size_bytes = sum(p.stat().st_size for p in folder.iterdir() if p.name != "manifest.json")
            rows[name] = {"bytes": size_bytes / kept, "decode": min(read_decode_us(folder) for _ in range(2)),
                          "de": delta_e(folder, truth) if name != "raw" else 0.0, "runs": []}
        rows[STUDIES] = {"bytes": sum(f.stat().st_size for f in files) / len(files), "decode": float("nan"),
                         "de": float("nan"), "runs": []}
        for repeat in range(args.repeats):  # alternate the pipelines: the host drifts
            for name in rows:
                if name == STUDIES:
                    def make():
                        return (DataLoader(JpegFolderLab(files, size), batch_size=BATCH, shuffle=True, drop_last=True,
                                           num_workers=1, persistent_workers=True), lambda b: b)
                else:
                    def make(folder=shards[name]):  # each pass is the next epoch, with its own shuffle
                        return make_loader(folder, "train", BATCH, num_workers=1), lambda b: rgb_uint8_to_lab(b["rgb"])
                rows[name]["runs"].append(measure(make, args.epochs))
                print(f"  repeat {repeat} {name:32s} {rows[name]['runs'][-1][1]:7,.0f} samples per CPU-second",
                      flush=True)

    raw = rows["raw"]
    raw_rate = float(np.median([c for _, c in raw["runs"]]))
    print(f"\n### {size} px: {data}, {kept:,} images ({len(truth):,} training), batch {BATCH}, 1 loader worker, "
          f"medians of {args.repeats}\n")
    print("| encoding | bytes / image | smaller than raw | read + decode, us / image | samples / CPU-second "
          "| vs raw | samples / s (wall) | mean delta E vs raw pixels |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        per_cpu = float(np.median([c for _, c in r["runs"]]))
        wall = float(np.median([w for w, _ in r["runs"]]))
        r["per_cpu"] = per_cpu
        print(f"| {name} | {r['bytes']:,.0f} | {raw['bytes'] / r['bytes']:.1f}x | {r['decode']:,.0f} | {per_cpu:,.0f} "
              f"| {per_cpu / raw_rate:.2f}x | {wall:,.0f} | {r['de']:.2f} |")
    d = rows[DEFAULT]
    ratio_target = 3 if size <= 64 else 5
    print(f"\ndefault at {size} px: {raw['bytes'] / d['bytes']:.1f}x smaller than raw (target >= {ratio_target}x); "
          f"{d['per_cpu']:,.0f} samples per CPU-second (target >= 1,250 at 64 px) = {d['per_cpu'] / raw_rate:.2f}x "
          "raw's (target >= 0.7x)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--encodings", default=",".join(ENCODINGS), help=f"of {', '.join(ENCODINGS)} (raw always)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # one intra-op thread: the worker and the consumer share 2 cores
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    kind = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "other"
    print(f"{platform.processor() or platform.machine()}, {kind} CPU, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, Python {sys.version.split()[0]}")
    for size in map(int, args.sizes.split(",")):
        bench_size(size, args)


if __name__ == "__main__":
    main()
