"""`colorray colorize`: colorize your photos (files, folders, globs) with a trained model."""

from __future__ import annotations

import sys
from pathlib import Path

from colorray.colorize import MAX_RENDER_SIZE, colorize_files, find_inputs, load_model
from colorray.precision import for_inference


def run(args) -> None:
    if args.batch_size < 1 or args.samples < 1:
        raise ValueError(f"--batch-size ({args.batch_size}) and --samples ({args.samples}) must be at least 1")
    if args.render_size is not None and not 8 <= args.render_size <= MAX_RENDER_SIZE:
        raise ValueError(f"--render-size {args.render_size}: the generator's input short side must be 8 to "
                         f"{MAX_RENDER_SIZE} pixels")
    files = find_inputs(args.inputs)
    G, size = load_model(args.model, args.device, tracking_uri=args.tracking_uri)
    G = for_inference(G, size, args.batch_size, args.device)  # the fastest precision here, measured once
    r = colorize_files(G, size, files, Path(args.out), fmt=args.format, side_by_side=args.side_by_side,
                       samples=args.samples, overwrite=args.overwrite, replace_inputs=args.replace_inputs,
                       batch_size=args.batch_size, device=args.device, progress=not args.quiet,
                       render_size=args.render_size)
    for name, why in r["failed"].items():
        print(f"colorize: {name}: {why}", file=sys.stderr)
    for name, why in r["skipped"].items():
        print(f"colorize: skipped {name}: {why}", file=sys.stderr)
    for name, target in r["renamed"].items():
        print(f"colorize: {name} -> {target} (its plain name is another input's)", file=sys.stderr)
    print(f"colorize: {len(files)} inputs: {len(r['written'])} images written to {args.out}, "
          f"{len(r['failed'])} unreadable, {len(r['skipped'])} skipped")
    if r["failed"] or r["skipped"]:
        sys.exit(1)
