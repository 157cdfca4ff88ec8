"""Colorizing speed and memory: a 12-megapixel photo with a 256-px model, and a folder of 64-px images.

    python benchmarks/colorize.py [--out bench-colorize] [--threads 2] [--render-sizes 64,256,512]

With --render-sizes, also the 12-MP photo with the 64-px model at each `--render-size` (the
generator sees short side N; the output keeps the photo's size and lightness, checked here).

Each measurement runs in a fresh process (so peak RSS is that job's own): the model file is
loaded, then `colorray.colorize.colorize_files` decodes, colorizes at full resolution and
writes the PNG; the time of that call and the process's peak RSS (ru_maxrss) are printed, with
the RSS after loading (imports + model) for reference. Untrained weights: speed does not
depend on them. Targets (issue 7): <= 2 s and <= 2 GiB for the 12-MP photo on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[4]))
from colorray.colorize import colorize_files, find_inputs, load_model
from colorray.precision import for_inference
device = sys.argv[5]
G, size = load_model(sys.argv[1], device)
G = for_inference(G, size, 8, device)  # as `colorray colorize` runs it (probe or cache)
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
files = find_inputs([sys.argv[2]])
start = time.perf_counter()
render = int(sys.argv[6]) or None
r = colorize_files(G, size, files, Path(sys.argv[3]), progress=False, overwrite=True, device=device,
                   render_size=render)
seconds = time.perf_counter() - start
assert not r["failed"] and len(r["written"]) == len(files), r
print(json.dumps({"images": len(files), "seconds": seconds, "peak_rss_gib": resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss / 2**20, "rss_after_load_gib": loaded, "precision": G.precision.label,
    "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else 0.0}))
"""


def run(model: Path, inputs: Path, out: Path, threads: int, device: str = "cpu", render_size: int = 0) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, str(model), str(inputs), str(out), str(threads), device,
                        str(render_size)], capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-colorize")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--folder-images", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--render-sizes", default="", help="e.g. 64,256,512: the 12-MP photo, 64-px model, at each")
    ap.add_argument("--only-render", action="store_true", help="skip the two default measurements")
    args = ap.parse_args(argv)
    import numpy as np
    from PIL import Image
    from skimage import data

    from colorray.models.files import save_generator
    from colorray.config import parse_params
    from colorray.models import build_generator

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    models = {}
    for size in (256, 64):
        params = parse_params({"data": {"image_size": size}})
        models[size] = out / f"generator-{size}.pt"
        save_generator(build_generator(params), params, 0, models[size])
    photo = out / "photo-12mp.jpg"  # 4000 x 3000 gray JPEG
    Image.fromarray(data.camera()).resize((4000, 3000), Image.Resampling.BICUBIC).save(photo, quality=90)
    gpu = lambda r: f", peak GPU memory {r['peak_gpu_gib']:.2f} GiB" if args.device.startswith("cuda") else ""  # noqa: E731
    folder = out / "small"
    folder.mkdir(exist_ok=True)
    rgb = data.astronaut()
    rng = np.random.default_rng(0)
    for i in range(args.folder_images):
        y, x = rng.integers(0, 512 - 64, 2)
        Image.fromarray(rgb[y:y + 64, x:x + 64]).convert("L").save(folder / f"{i:04d}.png")

    for n in [int(x) for x in args.render_sizes.split(",") if x]:
        r = run(models[64], photo, out / f"out-12mp-render{n}", args.threads, args.device, n)
        written = np.asarray(Image.open(out / f"out-12mp-render{n}" / "photo-12mp.png"))
        from skimage import color

        L_in = color.rgb2lab(np.repeat(np.asarray(Image.open(photo))[..., None], 3, 2)[::8, ::8])[..., 0]
        dL = np.abs(color.rgb2lab(written[::8, ::8])[..., 0] - L_in).max()
        print(f"12-MP photo, 64-px model, --render-size {n}, {args.device}, {args.threads} threads, {r['precision']}: "
              f"output {written.shape[1]}x{written.shape[0]}, max |L out - L in| {dL:.2f} (every 8th pixel), "
              f"{r['seconds']:.2f} s, peak RSS {r['peak_rss_gib']:.2f} GiB (after loading: {r['rss_after_load_gib']:.2f} GiB)"
              f"{gpu(r)}")
    if args.only_render:
        return
    big = run(models[256], photo, out / "out-12mp", args.threads, args.device)
    small = run(models[64], folder, out / "out-small", args.threads, args.device)
    print(f"12-MP photo (4000x3000), 256-px model, {args.device}, {args.threads} threads, {big['precision']}: "
          f"{big['seconds']:.2f} s, peak RSS {big['peak_rss_gib']:.2f} GiB (after loading: "
          f"{big['rss_after_load_gib']:.2f} GiB){gpu(big)}")
    print(f"{small['images']} 64-px images, 64-px model, {small['precision']}: {small['images'] / small['seconds']:.1f} "
          f"images/s ({small['seconds']:.2f} s), peak RSS {small['peak_rss_gib']:.2f} GiB{gpu(small)}")


if __name__ == "__main__":
    main()
