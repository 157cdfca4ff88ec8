"""The `colorray` command: its arguments, and one way out for every error.

What a subcommand does is in colorray/commands/<name>.py (`run(args)`), imported only when
that subcommand runs, so `colorray --help` starts fast and a DVC stage's script
(pipeline/<stage>.py, which imports its command module itself) depends on its own code only.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

from colorray.config import StageInterrupted, UserError

# Errors that are the user's input, not a bug: one clear line, no traceback.
USER_ERRORS = (UserError, ValueError, FileNotFoundError, FileExistsError, KeyError)


SHARDS_HELP = ("the shards to read: a folder or a URL (https://, s3://, gs://, pipe:...{name}); default: "
               "data.shards_url, else data/shards")
PARAMS_HELP = "the parameters file (validated; see colorray params)"
DEVICE_HELP = "torch device: cpu, cuda, cuda:1, ..."


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="colorray", description="Colorize grayscale photos with GANs.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch", help="download, verify and extract data.source (DVC stage 'fetch')")
    p.add_argument("--params", default="params.yaml", help=PARAMS_HELP)
    p.add_argument("--out", default="data/raw", help="where the extracted source goes")
    p.add_argument("--downloads", default="data/downloads", help="download cache (kept for resume)")
    p.set_defaults(run="colorray.commands.fetch:run")

    p = sub.add_parser("shard", help="decode, filter, split and write webdataset shards (DVC stage 'shard')")
    p.add_argument("--params", default="params.yaml", help=PARAMS_HELP)
    p.add_argument("--raw", default="data/raw", help="the fetch stage's output to read")
    p.add_argument("--out", default="data/shards", help="where the shards and manifest.json go")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    p.add_argument("--from", dest="convert", default=None, metavar="SHARDS",
                   help="convert these raw shards (a folder or URL) to the encoding instead of reading --raw: "
                        "the stored pixels are encoded, the sources are not decoded again")
    p.add_argument("--encoding", choices=["jpeg", "webp", "png", "raw"], help="overrides data.encoding")
    p.add_argument("--jpeg-quality", type=int, help="overrides data.jpeg_quality")
    p.add_argument("--compression", choices=["gzip", "none"], help="overrides data.compression")
    p.set_defaults(run="colorray.commands.shard:run")

    p = sub.add_parser("init", help="resolve train.init_from to models/init.pt + init.json (DVC stage 'init')")
    p.add_argument("--params", default="params.yaml", help=PARAMS_HELP)
    p.add_argument("--models", default="models", help="where init.pt and init.json go")
    p.add_argument("--root", default=".", help="project folder: mlflow.db (the store of models:/ URIs)")
    p.set_defaults(run="colorray.commands.init:run")

    p = sub.add_parser("train", help="Ray Train data-parallel training with MLflow (DVC stage 'train')")
    p.add_argument("--params", default="params.yaml", help=PARAMS_HELP)
    p.add_argument("--shards", default=None, help=SHARDS_HELP)
    p.add_argument("--root", default=".", help="project folder: mlflow.db, mlruns/, ray_results/")
    p.add_argument("--models", default="models", help="where generator.pt and checkpoint.pt go")
    p.add_argument("--metrics", default="metrics", help="where train.json, train_epochs.csv and loss_curves.png go")
    p.add_argument("--best", default="tune/best_params.yaml",
                   help="tuned values applied over --params when the file exists ('' to ignore)")
    p.add_argument("--init", default=None, help="the init stage's models/init.pt (train.init_from); without it, a "
                   "set train.init_from is resolved now")
    p.set_defaults(run="colorray.commands.train:run")

    p = sub.add_parser("tune", help="Ray Tune sweep of tune.space over Ray Train trials (DVC stage 'tune')")
    p.add_argument("--params", default="params.yaml", help=PARAMS_HELP)
    p.add_argument("--shards", default=None, help=SHARDS_HELP)
    p.add_argument("--root", default=".", help="project folder: mlflow.db, mlruns/, ray_results/")
    p.add_argument("--out", default="tune", help="best_params.yaml, results.csv, metric_vs_knobs.png")
    p.add_argument("--init", default=None, help="the init stage's models/init.pt (train.init_from); without it, a "
                   "set train.init_from is resolved now")
    p.set_defaults(run="colorray.commands.tune:run")

    p = sub.add_parser("baseline", help="train the reconstruction-only baseline generator (DVC stage 'baseline')")
    p.add_argument("--params", default="params.yaml", help=PARAMS_HELP)
    p.add_argument("--best", default="tune/best_params.yaml", help="tuned values, as for train")
    p.add_argument("--shards", default=None, help=SHARDS_HELP)
    p.add_argument("--out", default="models/baseline.pt", help="the baseline generator file to write")
    p.add_argument("--work", default=None, metavar="DIR",
                   help="keep checkpoints here and resume from them (a long run); default: a temp folder")
    p.add_argument("--init", default=None, help="the init stage's models/init.pt (train.init_from): the baseline "
                   "starts from the same model as the GAN; without it, a set train.init_from is resolved now")
    p.set_defaults(run="colorray.commands.baseline:run")

    p = sub.add_parser("classifier", help="train the classifier of the classifier metrics (DVC stage 'classifier')")
    p.add_argument("--params", default="params.yaml", help=PARAMS_HELP)
    p.add_argument("--shards", default=None, help=SHARDS_HELP)
    p.add_argument("--out", default="models/classifier.pt", help="the classifier file to write")
    p.set_defaults(run="colorray.commands.classifier:run")

    p = sub.add_parser("evaluate", help="measure the models and baselines, write eval/, register the "
                                        "winner (DVC stage 'evaluate')")
    p.add_argument("--params", default="params.yaml", help=PARAMS_HELP)
    p.add_argument("--best", default="tune/best_params.yaml", help="tuned values, as for train")
    p.add_argument("--shards", default=None, help=SHARDS_HELP)
    p.add_argument("--generator", default="models/generator.pt", help="the trained GAN generator (train stage)")
    p.add_argument("--baseline", default="models/baseline.pt",
                   help="the reconstruction-only generator (baseline stage)")
    p.add_argument("--classifier", default="models/classifier.pt", help="the classifier (classifier stage)")
    p.add_argument("--init", default=None, help="the init stage's models/init.pt: when it names a starting model "
                   "(train.init_from), that model is a candidate too (kept as champion if fine-tuning made it worse)")
    p.add_argument("--loss-curves", default="metrics/loss_curves.png", help="the training curves shown in the report")
    p.add_argument("--root", default=".", help="project folder: mlflow.db, mlruns/")
    p.add_argument("--out", default="eval", help="where metrics.json, report.html and the sample grids go")
    p.set_defaults(run="colorray.commands.evaluate:run")

    p = sub.add_parser("colorize", help="colorize your photos and videos (files, folders, globs) with a trained model")
    p.add_argument("inputs", nargs="+", help="image or video files, folders (searched recursively) or glob patterns")
    p.add_argument("-o", "--out", default="colorized", help="output folder (folder inputs keep their layout); for "
                   "one video, also a video file name (clip_color.mp4)")
    p.add_argument("--model", default="builtin:base",
                   help="builtin:base (default: the base model that ships with colorray, trained on 100,000 "
                        "photos), a generator .pt, a checkpoint.pt, or an MLflow URI: models:/<name>@<alias> "
                        "(your pipeline's best: models:/colorray@champion), models:/<name>/<version> or "
                        "models:/<model_id>; with --runtime onnx, a .onnx file from colorray export")
    p.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx"],
                   help="run the generator with PyTorch or ONNX Runtime; auto: ONNX Runtime for a .onnx --model, "
                        "PyTorch otherwise")
    p.add_argument("--temporal", default="on", choices=["on", "off"],
                   help="videos: keep each frame's colors consistent with the previous frame's along the optical "
                        "flow (reset at scene cuts); off: every frame colorized on its own")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow store of models:/ URIs")
    p.add_argument("--format", default="png", choices=["png", "jpg", "webp", "tif"], help="output file format")
    p.add_argument("--side-by-side", action="store_true", help="write gray input | colorization")
    p.add_argument("--samples", type=int, default=1, help="K > 1: K diverse colorizations each (dropout on)")
    p.add_argument("--batch-size", type=int, default=8, help="photos per generator call (memory-bounded)")
    p.add_argument("--render-size", type=int, default=None, metavar="N",
                   help="the generator sees each photo at short side N (aspect kept, rounded to the network's "
                        "stride); default: the square it was trained on. The colors are joined with the photo's "
                        "full-resolution lightness either way")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    p.add_argument("--replace-inputs", action="store_true",
                   help="with --overwrite: also replace an input that is its own output (-o onto the photos)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run="colorray.commands.colorize:run")

    p = sub.add_parser("export", help="write a generator as an ONNX file (dynamic batch, height and width) with a "
                                      "JSON sidecar describing its pre- and post-processing")
    p.add_argument("model", help="a generator .pt, a checkpoint.pt, or an MLflow URI (models:/...): then the .onnx is "
                                 "also logged as an artifact of the model's run")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="the export format")
    p.add_argument("-o", "--out", default="generator.onnx", help="the .onnx file to write (its sidecar: <out>.json)")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow store of models:/ URIs")
    p.add_argument("--opset", type=int, default=18, help="the ONNX opset to target (17 or later)")
    p.set_defaults(run="colorray.commands.export:run")

    p = sub.add_parser("sources", help="list the dataset sources and their official URLs")
    p.set_defaults(run="colorray.commands.info:sources")

    p = sub.add_parser("presets", help="list the study presets and the data each study used")
    p.set_defaults(run="colorray.commands.info:presets")

    p = sub.add_parser("train-local", help="train in this process, without Ray (debugging, CPU runs)")
    p.add_argument("--params", default="params.yaml", help=PARAMS_HELP)
    p.add_argument("--shards", default=None, help=SHARDS_HELP)
    p.add_argument("--out", default="runs/local", help="checkpoints, colorfulness.json; a checkpoint here is resumed")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much training time")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out")
    p.set_defaults(run="colorray.commands.train_local:run")

    p = sub.add_parser("params", help="validate params.yaml and print it with every default filled in")
    p.add_argument("--params", default="params.yaml", help=PARAMS_HELP)
    p.set_defaults(run="colorray.commands.info:params")
    return ap


def main(argv: list[str] | None = None, run: Callable | None = None) -> None:
    """Parse `argv` and run its subcommand. `run`: the subcommand's function, when the caller
    imported it already (the DVC stage scripts do, so that their imports name their code)."""
    args = build_parser().parse_args(argv)
    try:
        if run is None:
            module, function = args.run.split(":")
            run = getattr(importlib.import_module(module), function)
        run(args)
    except (StageInterrupted, KeyboardInterrupt) as e:  # nothing written; 130: ended by SIGINT
        print(f"colorray {args.command}: interrupted: {e or 'Ctrl-C'}", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"colorray {args.command}: error: {msg}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
