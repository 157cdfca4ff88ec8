"""ONNX Runtime vs PyTorch on this CPU: the generator's forward pass at 256 px, 512 px and 12 MP,
and a whole 12-MP photo through each pipeline (issue 31).

    python benchmarks/onnx_speed.py [--out bench-onnx] [--threads 2] [--repeats 5]

The generator has the demo preset's shape (pix2pix U-Net, 32 -> 256 channels, depth 6) with
random weights: speed does not depend on them. It is exported once with `colorray.export`
(fp32, opset 18, dynamic batch/height/width) and run by:

- PyTorch, fp32 (eval mode, torch.no_grad);
- PyTorch in the precision `colorray colorize` runs it in: colorray.precision.for_inference,
  the `auto` mode (bf16 and/or channels_last when measured faster here), chosen for the
  colorize workload (the training size, batch 8) as the command does;
- ONNX Runtime 1.x, CPU execution provider, default graph optimizations, --threads intra-op
  threads.

Sizes: 8 inputs of 64x64 (what `colorray colorize` runs by default: 8 photos a call, each at
the training size), a 256x256 and a 512x512 input, and 12 MP: a 4000x3000 photo at render size 3000, which
the generator sees at 3968x3008 (sides rounded to its stride, 64). Each is timed --repeats times
(2 at 12 MP) after one untimed run, the runtimes taking turns so that a drift of the machine's
speed touches all; the median is reported. Then "photo": a 4000x3000 photo colorized end to end
at the default render size (the generator sees 64x64; the full-resolution Lab conversions
dominate) by colorray.colorize (torch) and by colorray.onnx_runtime (numpy + Pillow + ONNX
Runtime, no torch).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-onnx")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch

    from colorray.colorize import colorize, render_shape, stride_of
    from colorray.config import parse_params
    from colorray.export import export_onnx
    from colorray.models import build_generator
    from colorray.onnx_runtime import OnnxColorizer
    from colorray.precision import cpu_description, for_inference

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = parse_params({"preset": "demo"})
    torch.manual_seed(0)
    G = build_generator(params).eval()
    size = params.data.image_size
    export_onnx(G, size, out / "demo.onnx", "random demo-shaped generator")
    runtime = OnnxColorizer(out / "demo.onnx", threads=args.threads)
    auto = for_inference(G, size, 8, "cpu", log=lambda m: None)  # as `colorray colorize` runs it
    shapes = {"64 px, batch 8": (8, 64, 64), "256 px": (1, 256, 256), "512 px": (1, 512, 512),
              "12 MP": (1, *render_shape(3000, 4000, size, 3000, stride_of(G)))}
    rows = []
    for name, (n, h, w) in shapes.items():
        x = torch.linspace(-1, 1, n * h * w).view(n, 1, h, w)
        xn = x.numpy()
        runs = {"PyTorch fp32": lambda: G(x), f"PyTorch auto ({auto.precision.label})": lambda: auto(x),
                "ONNX Runtime fp32": lambda: runtime.predict(xn)}
        repeats = 2 if h * w > 4e6 else args.repeats
        times: dict[str, list[float]] = {k: [] for k in runs}
        with torch.no_grad():
            for fn in runs.values():
                fn()  # warm-up: kernel selection, allocator pools
            for _ in range(repeats):
                for k, fn in runs.items():
                    times[k] += timed(fn, 1)
        row = {"size": name, "input": f"{n}x{w}x{h}", **{k: statistics.median(v) for k, v in times.items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    photo = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    photo_runs = {"PyTorch auto pipeline": lambda: colorize(auto, photo, size),
                  "numpy + ONNX Runtime pipeline": lambda: runtime.colorize(photo)}
    ptimes: dict[str, list[float]] = {k: [] for k in photo_runs}
    with torch.no_grad():
        for fn in photo_runs.values():
            fn()
        for _ in range(2):
            for k, fn in photo_runs.items():
                ptimes[k] += timed(fn, 1)
    photo_row = {k: statistics.median(v) for k, v in ptimes.items()}
    print(json.dumps(photo_row), flush=True)
    report = {"cpu": cpu_description(), "torch": torch.__version__, "onnxruntime": ort.__version__,
              "threads": args.threads, "auto": auto.precision.label, "date": time.strftime("%Y-%m-%d"),
              "command": "python benchmarks/onnx_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "generator": rows, "photo_12mp_default_render": photo_row}
    (out / "onnx_speed.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
