"""The `colorray` command. The DVC stage scripts in pipeline/ call these same subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from colorray.config import ConfigError, StageInterrupted, load_params
from colorray.data.archive import UnsafeArchiveError
from colorray.data.download import DownloadError

# Errors that are the user's input, not a bug: one clear line, no traceback.
USER_ERRORS = (ConfigError, DownloadError, UnsafeArchiveError, FileNotFoundError, FileExistsError, KeyError,
               ValueError)


def cmd_fetch(args) -> None:
    from colorray.data.sources import fetch_source

    cfg = load_params(args.params).data
    record = fetch_source(cfg, Path(args.out), Path(args.downloads))
    for f in record["files"]:
        state = "verified" if f["verified"] else "not verified (no checksum known)"
        print(f"fetch: {f['name']} from {f['url'] or 'the installed package'}: {state}")


def cmd_shard(args) -> None:
    from colorray.data.shards import write_shards

    cfg = load_params(args.params).data
    m = write_shards(cfg, Path(args.raw), Path(args.out), workers=args.workers)
    counts = ", ".join(f"{s} {v['count']} in {len(v['shards'])} shards" for s, v in m["splits"].items())
    print(f"shard: {m['inputs']} inputs -> kept {m['kept']} ({counts}), dropped "
          f"{len(m['dropped'])}, outside subset {m['outside_subset']}; see {args.out}/manifest.json")


def cmd_sources(args) -> None:
    from colorray.data.sources import SOURCES

    for name, src in SOURCES.items():
        urls = ", ".join(f.url or "(manual download)" for f in src.files) or "(bundled, no download)"
        print(f"{name:16s} {src.study}\n{'':16s} {urls}")


def cmd_params(args) -> None:
    from colorray.config import read_yaml
    from colorray.sweep.space import parse_space

    params = load_params(args.params)
    parse_space(read_yaml(args.params) or {}, params.tune)
    print(json.dumps(params.model_dump(mode="json"), indent=2))


def cmd_presets(args) -> None:
    from colorray.presets import PRESETS

    for name, preset in PRESETS.items():
        data = " ".join(f"-S data.{k}={v}" for k, v in preset["data"].items())
        print(f"{name:20s} {preset['study']}\n{'':20s} data: {data}")


def cmd_train_local(args) -> None:
    import torch

    from colorray.atomic import write_json_atomic
    from colorray.train.loop import train_local, validate
    from colorray.precision import FP32
    from colorray.train.step import GANTrainer

    params = load_params(args.params)
    untrained = GANTrainer(params, args.device, precision=FP32).G  # the weights train_local starts from
    before, _ = validate(untrained, Path(args.shards), args.device, max_images=512)
    trainer = train_local(params, args.shards, args.out, device=args.device, resume=not args.fresh,
                          max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    after, _ = validate(trainer.G, Path(args.shards), args.device, max_images=512)
    print(f"val colorfulness (Hasler & Süsstrunk) on {after['val/images']} images: gray baseline 0.00, "
          f"untrained generator {before['val/colorfulness']:.2f}, after {trainer.iter} iterations "
          f"{after['val/colorfulness']:.2f}, ground truth {after['val/colorfulness_true']:.2f}")
    write_json_atomic(Path(args.out) / "colorfulness.json",
                      {"iterations": trainer.iter, "torch_threads": torch.get_num_threads(), "gray": 0.0,
                       "untrained": before["val/colorfulness"], "trained": after["val/colorfulness"],
                       "truth": after["val/colorfulness_true"], "images": after["val/images"]})


def cmd_train(args) -> None:
    from colorray.train.distributed import fit

    best = Path(args.best) if args.best else None
    params = _train_params(args)
    if best and best.exists():
        print(f"train: parameters from {args.params} with the tuned values of {best}")
    summary = fit(params, Path(args.shards), Path(args.root), Path(args.models), Path(args.metrics),
                  resume=params.train.resume)
    m = summary["metrics"]
    print(f"train: {summary['iterations']} iterations, MLflow run {summary['run_id']}, model "
          f"{summary['model_uri']}; val/l1 {m.get('val/l1', float('nan')):.4f}, "
          f"val/colorfulness {m.get('val/colorfulness', float('nan')):.2f} "
          f"(truth {m.get('val/colorfulness_true', float('nan')):.2f})")


def cmd_tune(args) -> None:
    from colorray.config import read_yaml
    from colorray.sweep.run import run_sweep

    base = read_yaml(args.params) or {}
    params = load_params(args.params)
    s = run_sweep(base, params, Path(args.shards), Path(args.root), Path(args.out))
    if not s.get("enabled", True):
        print(f"tune: tune.enabled is false; wrote an empty {args.out}/best_params.yaml")
        return
    b = s["best"]
    print(f"tune: {s['trials']} trials ({s['completed']} completed, {s['stopped early']} stopped early by {s['scheduler']}, "
          f"{s['error']} failed; {s['trial_iters']} trial iterations in all). Best by {s['metric']}: trial "
          f"{b['trial_id']} with {b['score']:.4g}; MLflow sweep run {s['parent_run_id']}; see {args.out}/")


def _train_params(args):
    """params.yaml with the sweep's winner applied, as the train stage uses them."""
    best = Path(args.best) if args.best else None
    return load_params(args.params, best if best and best.exists() else None)


def cmd_baseline(args) -> None:
    from colorray.evaluate import train_baseline

    params = _train_params(args)
    print(f"baseline: training the reconstruction-only generator for {params.train.iters} iterations "
          f"(progress every 25)", flush=True)
    s = train_baseline(params, Path(args.shards), Path(args.out), log=lambda m: print(f"baseline: {m}", flush=True))
    print(f"baseline: reconstruction-only generator, {s['iterations']} iterations in {s['precision'].label} "
          f"-> {args.out}; val/l1 {s['val/l1']:.4f}, val/delta_cf {s['val/delta_cf']:.2f}")


def cmd_classifier(args) -> None:
    from colorray.evaluate import train_real_classifier

    s = train_real_classifier(load_params(args.params), Path(args.shards), Path(args.out))
    if "unavailable" in s:
        print(f"classifier: not trained: {s['unavailable']}; wrote {args.out} saying so")
        return
    acc = (f"accuracy {s['test_accuracy']:.3f} on the {s['test_images']} real test images of those classes"
           if s["test_accuracy"] is not None else "no test image has a class of the training split")
    print(f"classifier: {s['classes']} classes, {s['train_images']} training images; {acc} -> {args.out}")


def cmd_evaluate(args) -> None:
    from colorray.evaluate import evaluate

    s = evaluate(_train_params(args), Path(args.shards), Path(args.generator), Path(args.baseline),
                 Path(args.classifier), Path(args.out), Path(args.root), Path(args.loss_curves))
    for name, m in s["models"].items():
        shown = ", ".join(f"{k} {m[k]:.4g}" for k in ("fid", "lpips", "ssim", "psnr", "delta_cf", "accuracy", "cim")
                          if k in m)
        print(f"evaluate: {name:15s} {shown}")
    print(f"evaluate: {s['selection']['reason']}; report: {args.out}/report.html")


def cmd_colorize(args) -> None:
    from colorray.colorize import colorize_files, find_inputs, load_model
    from colorray.precision import for_inference

    if args.batch_size < 1 or args.samples < 1:
        raise ValueError(f"--batch-size ({args.batch_size}) and --samples ({args.samples}) must be at least 1")
    files = find_inputs(args.inputs)
    G, size = load_model(args.model, args.device, tracking_uri=args.tracking_uri)
    G = for_inference(G, size, args.batch_size, args.device)  # the fastest precision here, measured once
    r = colorize_files(G, size, files, Path(args.out), fmt=args.format, side_by_side=args.side_by_side,
                       samples=args.samples, overwrite=args.overwrite, replace_inputs=args.replace_inputs,
                       batch_size=args.batch_size, device=args.device, progress=not args.quiet)
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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="colorray", description="Colorize grayscale photos with GANs.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch", help="download, verify and extract data.source (DVC stage 'fetch')")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", default="data/raw")
    p.add_argument("--downloads", default="data/downloads", help="download cache (kept for resume)")
    p.set_defaults(fn=cmd_fetch)

    p = sub.add_parser("shard", help="decode, filter, split and write webdataset shards (DVC stage 'shard')")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--raw", default="data/raw")
    p.add_argument("--out", default="data/shards")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    p.set_defaults(fn=cmd_shard)

    p = sub.add_parser("train", help="Ray Train data-parallel training with MLflow (DVC stage 'train')")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--shards", default="data/shards")
    p.add_argument("--root", default=".", help="project folder: mlflow.db, mlruns/, ray_results/")
    p.add_argument("--models", default="models")
    p.add_argument("--metrics", default="metrics")
    p.add_argument("--best", default="tune/best_params.yaml",
                   help="tuned values applied over --params when the file exists ('' to ignore)")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("tune", help="Ray Tune sweep of tune.space over Ray Train trials (DVC stage 'tune')")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--shards", default="data/shards")
    p.add_argument("--root", default=".", help="project folder: mlflow.db, mlruns/, ray_results/")
    p.add_argument("--out", default="tune", help="best_params.yaml, results.csv, metric_vs_knobs.png")
    p.set_defaults(fn=cmd_tune)

    p = sub.add_parser("baseline", help="train the reconstruction-only baseline generator (DVC stage 'baseline')")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--best", default="tune/best_params.yaml", help="tuned values, as for train")
    p.add_argument("--shards", default="data/shards")
    p.add_argument("--out", default="models/baseline.pt")
    p.set_defaults(fn=cmd_baseline)

    p = sub.add_parser("classifier", help="train the classifier of the classifier metrics (DVC stage 'classifier')")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--shards", default="data/shards")
    p.add_argument("--out", default="models/classifier.pt")
    p.set_defaults(fn=cmd_classifier)

    p = sub.add_parser("evaluate", help="measure the models and baselines, write eval/, register the "
                                        "winner (DVC stage 'evaluate')")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--best", default="tune/best_params.yaml", help="tuned values, as for train")
    p.add_argument("--shards", default="data/shards")
    p.add_argument("--generator", default="models/generator.pt")
    p.add_argument("--baseline", default="models/baseline.pt")
    p.add_argument("--classifier", default="models/classifier.pt")
    p.add_argument("--loss-curves", default="metrics/loss_curves.png")
    p.add_argument("--root", default=".", help="project folder: mlflow.db, mlruns/")
    p.add_argument("--out", default="eval")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("colorize", help="colorize your photos (files, folders, globs) with a trained model")
    p.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("-o", "--out", default="colorized", help="output folder (folder inputs keep their layout)")
    p.add_argument("--model", default="models:/colorray@champion",
                   help="a generator .pt, a checkpoint.pt, or an MLflow models:/ or runs:/ URI")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow store of models:/ and runs:/ URIs")
    p.add_argument("--format", default="png", choices=["png", "jpg", "webp", "tif"])
    p.add_argument("--side-by-side", action="store_true", help="write gray input | colorization")
    p.add_argument("--samples", type=int, default=1, help="K > 1: K diverse colorizations each (dropout on)")
    p.add_argument("--batch-size", type=int, default=8, help="photos per generator call (memory-bounded)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    p.add_argument("--replace-inputs", action="store_true",
                   help="with --overwrite: also replace an input that is its own output (-o onto the photos)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_colorize)

    p = sub.add_parser("sources", help="list the dataset sources and their official URLs")
    p.set_defaults(fn=cmd_sources)

    p = sub.add_parser("presets", help="list the study presets and the data each study used")
    p.set_defaults(fn=cmd_presets)

    p = sub.add_parser("train-local", help="train in this process, without Ray (debugging, CPU runs)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--shards", default="data/shards")
    p.add_argument("--out", default="runs/local")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much training time")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out")
    p.set_defaults(fn=cmd_train_local)

    p = sub.add_parser("params", help="validate params.yaml and print it with every default filled in")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(fn=cmd_params)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (StageInterrupted, KeyboardInterrupt) as e:  # nothing written; 130: ended by SIGINT
        print(f"colorray {args.command}: interrupted: {e or 'Ctrl-C'}", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"colorray {args.command}: error: {msg}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
