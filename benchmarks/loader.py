"""Loader throughput: shards -> (L, ab) tensors vs the studies' JPEG folder + per-image rgb2lab.

    python benchmarks/loader.py [--data tiny-imagenet|skimage] [--epochs 3]

Both pipelines produce the same thing, batches of normalised (L, ab) float tensors at 64x64,
batch 128, through a torch DataLoader with 1 and 2 worker processes:
  * colorray: webdataset shards of uint8 chunks, shuffle buffer, Lab batched in torch
    (in the consuming process, where the training device would do it);
  * baseline: the studies' approach, a Dataset that opens each JPEG with PIL and converts
    it with skimage.color.rgb2lab, collated by the DataLoader.
"Per core" is samples per CPU-second (user + system time of the process and its loader
workers), so it does not depend on how many cores the machine has.
Targets (issue 2): colorray >= 3x the baseline per core, and >= 1,250 samples/s per core.
"""

from __future__ import annotations

import argparse
import gc
import os
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

from colorray.color import rgb_uint8_to_lab
from colorray.config import DataParams
from colorray.data.loader import make_loader
from colorray.data.shards import write_shards
from colorray.data.sources import fetch_source

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT.parent / "shared" / "datasets" / "tiny-imagenet-200-mini.zip"
BATCH = 128
OURS, STUDIES = "colorray shards", "PIL + rgb2lab (studies)"


class JpegFolderLab(Dataset):
    """The studies' loader: PIL decode and skimage rgb2lab, one image at a time."""

    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as img:
            rgb = np.asarray(img.convert("RGB").resize((64, 64)))
        lab = rgb2lab(rgb).astype(np.float32)
        lab = torch.from_numpy(lab).permute(2, 0, 1)
        return lab[:1] / 50.0 - 1.0, lab[1:] / 110.0


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped loader workers
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(make, epochs: int) -> tuple[float, float, int]:
    """Build a loader with `make()`, run `epochs` passes; CPU time includes its workers."""
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
    return n / wall, n / (cpu_seconds() - c0), n


def prepare(data: str, work: Path) -> tuple[Path, list[Path]]:
    if data == "tiny-imagenet":
        if not MINI.exists():
            sys.exit(f"{MINI} not found; use --data skimage")
        cfg = DataParams(source="tiny-imagenet", url=MINI.as_uri(), image_size=64)
    else:
        cfg = DataParams(image_size=64)
    fetch_source(cfg, work / "raw", work / "downloads")
    write_shards(cfg, work / "raw", work / "shards", progress=False)
    if data == "tiny-imagenet":
        files = sorted((work / "raw").rglob("train/*/images/*.JPEG"))
    else:  # the same 64-px training crops, written as JPEGs
        files = []
        folder = work / "jpegs"
        folder.mkdir()
        loader = make_loader(work / "shards", "train", 256, num_workers=0, shuffle=False, drop_last=False)
        for batch in loader:
            for key, rgb in zip(batch["key"], batch["rgb"].numpy()):
                f = folder / (key.replace("/", "_") + ".jpg")
                Image.fromarray(rgb).save(f, quality=95)
                files.append(f)
    return work / "shards", files


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["tiny-imagenet", "skimage"],
                    default="tiny-imagenet" if MINI.exists() else "skimage")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # one intra-op thread: workers and the consumer share 2 cores

    with tempfile.TemporaryDirectory() as tmp:
        shards, files = prepare(args.data, Path(tmp))
        print(f"data: {args.data}, {len(files)} training images at 64x64, batch {BATCH}, "
              f"{args.epochs} epochs per measurement, 1 torch intra-op thread, "
              f"{os.cpu_count()} cores")
        results: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for repeat in range(args.repeats):  # alternate the pipelines: the host is noisy
            for workers in (1, 2):
                def ours(workers=workers):  # each pass is the next epoch, with its own shuffle
                    loader = make_loader(shards, "train", BATCH, num_workers=workers)
                    return loader, lambda b: rgb_uint8_to_lab(b["rgb"])

                def studies(workers=workers):
                    loader = DataLoader(JpegFolderLab(files), batch_size=BATCH, shuffle=True,
                                        drop_last=True, num_workers=workers, persistent_workers=True)
                    return loader, lambda b: b

                for name, make in ((OURS, ours), (STUDIES, studies)):
                    wall, per_cpu, n = measure(make, args.epochs)
                    results.setdefault((name, workers), []).append((wall, per_cpu))
                    print(f"repeat {repeat} {name:24s} workers={workers}: {wall:6.0f} samples/s wall, "
                          f"{per_cpu:6.0f} per CPU-second ({n} samples)", flush=True)

    med = {k: (float(np.median([w for w, _ in v])), float(np.median([c for _, c in v])))
           for k, v in results.items()}
    print(f"\nmedians of {args.repeats} repeats\n")
    print("| pipeline | loader workers | samples/s (wall) | samples / CPU-second |")
    print("|---|---|---|---|")
    for (name, w), (wall, per_cpu) in sorted(med.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"| {name} | {w} | {wall:,.0f} | {per_cpu:,.0f} |")
    for w in (1, 2):
        ratio = med[OURS, w][1] / med[STUDIES, w][1]
        print(f"workers={w}: colorray / studies per core = {ratio:.1f}x (target >= 3x); "
              f"colorray {med[OURS, w][1]:,.0f} samples per CPU-second (target >= 1,250)")


if __name__ == "__main__":
    main()
