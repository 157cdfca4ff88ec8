"""`colorray colorize`: colorize your photos and videos (files, folders, globs) with a trained model."""

from __future__ import annotations

import sys
from pathlib import Path

from colorray.colorize import MAX_RENDER_SIZE, colorize_files, find_inputs, load_model
from colorray.export import OnnxGenerator
from colorray.precision import for_inference
from colorray.video import colorize_videos, find_videos, is_video_path


def runtime_of(runtime: str, model: str) -> str:
    """`--runtime auto`: ONNX Runtime for an exported .onnx file, PyTorch for everything else
    (docs/benchmarks/onnx.md: neither is clearly faster on the CPU measured)."""
    if runtime == "auto":
        return "onnx" if model.lower().endswith(".onnx") else "torch"
    return runtime


def run(args) -> None:
    if args.batch_size < 1 or args.samples < 1:
        raise ValueError(f"--batch-size ({args.batch_size}) and --samples ({args.samples}) must be at least 1")
    if args.render_size is not None and not 8 <= args.render_size <= MAX_RENDER_SIZE:
        raise ValueError(f"--render-size {args.render_size}: the generator's input short side must be 8 to "
                         f"{MAX_RENDER_SIZE} pixels")
    runtime = runtime_of(args.runtime, args.model)
    if runtime == "onnx" and args.samples > 1:
        raise ValueError("--samples > 1 needs dropout at inference, which an ONNX export does not have; use "
                         "--runtime torch with a .pt model")
    videos = find_videos(args.inputs)
    files = [(f, rel) for f, rel in find_inputs(args.inputs) if not is_video_path(f)]
    out = Path(args.out)
    single_video = is_video_path(out)
    if single_video and (len(videos) != 1 or files):
        raise ValueError(f"--out {args.out} names one video file, but the inputs are {len(videos)} videos and "
                         f"{len(files)} images; give an output folder")
    if runtime == "onnx":
        G = OnnxGenerator(args.model)
        size = G.image_size
    else:
        G, size = load_model(args.model, args.device, tracking_uri=args.tracking_uri)
        G = for_inference(G, size, args.batch_size, args.device)  # the fastest precision here, measured once
    results = []
    if files or not videos:
        results.append(("images", colorize_files(
            G, size, files, out, fmt=args.format, side_by_side=args.side_by_side, samples=args.samples,
            overwrite=args.overwrite, replace_inputs=args.replace_inputs, batch_size=args.batch_size,
            device=args.device, progress=not args.quiet, render_size=args.render_size)))
    if videos:
        results.append(("videos", colorize_videos(
            G, size, videos, out, single_file=single_video, overwrite=args.overwrite,
            replace_inputs=args.replace_inputs, render_size=args.render_size, temporal=args.temporal == "on",
            batch_size=args.batch_size, device=args.device, progress=not args.quiet)))
    bad = False
    for kind, r in results:
        for name, why in r["failed"].items():
            print(f"colorize: {name}: {why}", file=sys.stderr)
        for name, why in r["skipped"].items():
            print(f"colorize: skipped {name}: {why}", file=sys.stderr)
        for name, target in r.get("renamed", {}).items():
            print(f"colorize: {name} -> {target} (its plain name is another input's)", file=sys.stderr)
        if kind == "videos":
            for line in r["written"]:
                print(f"colorize: wrote {line}")
        n = len(files) if kind == "images" else len(videos)
        print(f"colorize: {n} {kind[:-1]} inputs: {len(r['written'])} {kind} written to {args.out}, "
              f"{len(r['failed'])} unreadable, {len(r['skipped'])} skipped")
        bad |= bool(r["failed"] or r["skipped"])
    if bad:
        sys.exit(1)
