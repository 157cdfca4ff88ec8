"""The train stage's driver: Ray Train data-parallel training (colorray.train.worker), recorded
in MLflow and written out for DVC.

The driver (`fit`) owns the MLflow run: it creates it, passes its id to the workers, and after
training writes metrics/ and models/ and logs the final generator as an MLflow model. So a
worker group that Ray restarts after a failure keeps logging to the same run (rank 0 logs,
never a second run per restart), and a stage interrupted by Ctrl-C continues that run when it
is run again.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient

from colorray.atomic import torch_save_atomic, write_json_atomic, write_text_atomic
from colorray.config import Params, StageInterrupted, run_digest
from colorray.data.shards import MANIFEST, read_manifest
from colorray.data.storage import location, read_bytes
from colorray.metrics.fid import fid_cache_dir
from colorray.models.files import generator_from_state, save_generator
from colorray.pyfunc import log_colorizer
from colorray import tracking
from colorray.tracking import log_params, run_precision, setup_mlflow
from colorray.train import init_from
from colorray.train.loop import CHECKPOINT, check_resumable
from colorray.train.step import checkpoint_params, read_checkpoint
from colorray.train.worker import init_ray, read_stats, torch_trainer, worker_config


def _write_outputs(rows: list[dict], metrics_dir: Path, precision: dict) -> tuple[Path, Path]:
    """metrics/train.json (DVC metrics: the last report, and the precision the run used) and a
    per-epoch CSV (DVC plots)."""
    final = dict(rows[-1]) if rows else {}
    write_json_atomic(metrics_dir / "train.json", {**final, "precision": precision}, sort_keys=True)
    keys = ["epoch", "iter", "loss/d", "loss/g/adv", "loss/g/l1", "val/l1", "val/colorfulness", "val/delta_cf",
            "val/psnr", "val/ssim", "val/uiqi", "img/s"]
    per_epoch: dict[int, list[dict]] = {}
    for row in rows:
        per_epoch.setdefault(int(row.get("epoch", 0)), []).append(row)
    lines = []
    for epoch, group in sorted(per_epoch.items()):
        out = {"epoch": epoch, "iter": int(group[-1].get("iter", 0))}
        for k in keys[2:]:
            vals = [r[k] for r in group if k in r]
            out[k] = f"{np.mean(vals):.6g}" if vals else ""
        lines.append(out)
    csv_path = metrics_dir / "train_epochs.csv"
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=keys)
    w.writeheader()
    w.writerows(lines)
    write_text_atomic(csv_path, text.getvalue())
    return metrics_dir / "train.json", csv_path


def _loss_plot(rows: list[dict], path: Path) -> None:
    import matplotlib  # on first use only: a backend choice is global

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("loss/d", "loss/g/adv", "loss/g/l1", "val/l1"):
        pts = [(r["iter"], r[key]) for r in rows if key in r and "iter" in r]
        if pts:
            ax.plot(*zip(*pts), label=key)
    ax.set_xlabel("iteration")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def check_batches(params: Params, shards: str) -> None:
    """Refuse a batch that the (subset of the) training split cannot fill once."""
    count = read_manifest(shards)["splits"]["train"]["count"]
    size = min(count, params.data.dataset_size or count)
    if params.train.batch_size > size:
        raise ValueError(f"train.batch_size={params.train.batch_size} is larger than the training data "
                         f"({size} images{' with data.dataset_size' if params.data.dataset_size else ''})")


PENDING = "train-pending.json"  # in <root>/ray_results: the run an interrupted train stage continues


def _run_key(params: Params, shards: str, start: Path | None, init: dict) -> str:
    """What makes a training run the same one: its parameters, its data, its starting state
    (train.resume's checkpoint, train.init_from's weights) and the colorray code."""
    return run_digest(params, read_bytes(shards, MANIFEST), start.read_bytes() if start else b"",
                      str(init.get("sha256", "")).encode())[:16]


def _final_iter(result) -> int:
    return int((result.metrics or {}).get("iter", 0))


def _pending_run(pending: Path, key: str, client) -> str | None:
    """The MLflow run id of an unfinished train stage with this key, if its run still exists."""
    try:
        saved = json.loads(pending.read_text())
        if saved.get("key") == key:
            return client.get_run(saved["run_id"]).info.run_id
    except Exception:  # no file, another key, a deleted run: a new run
        pass
    return None


def fit(params: Params, shards: str | Path, root: Path, models_dir: Path, metrics_dir: Path,
        resume: bool = False, run_name: str | None = None, init: Path | None = None) -> dict:
    """Train with Ray Train and record everything; returns a summary. init: the init stage's
    models/init.pt (train.init_from); without it a set train.init_from is resolved now."""
    r, t = params.ray, params.train
    shards, root = location(shards), Path(root).resolve()
    check_batches(params, shards)
    models_dir.mkdir(parents=True, exist_ok=True)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    tracking_uri, experiment_id = setup_mlflow(root)
    client = MlflowClient(tracking_uri)
    init_weights, parent = init_from.prepare(t.init_from, init, models_dir, tracking_uri)
    params = init_from.inherit(params, init_weights)

    start_from = None  # train.resume: the workers start from the finished run's state in models/
    saved = models_dir / CHECKPOINT
    if resume and saved.exists():
        check_resumable(checkpoint_params(saved), params, saved)
        start_from = str(models_dir.resolve())

    init_ray()
    storage = r.storage_path or str(root / "ray_results")
    # An interrupted train stage (Ctrl-C, a crash) left its run unfinished: the same parameters,
    # data and code continue that run (its MLflow run, and its Ray Train run, whose latest
    # checkpoint the workers get back from storage); anything else starts a new one.
    pending = root / "ray_results" / PENDING
    key = _run_key(params, shards, saved if start_from else None, parent if init_weights else {})
    run_id = _pending_run(pending, key, client)
    if run_id:
        print(f"train: continuing the interrupted run {run_id} from its last checkpoint", flush=True)
    with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                          run_name=None if run_id else run_name or tracking.run_name("train", params, parent)) as run:
        if run_id is None:
            write_json_atomic(pending, {"key": key, "run_id": run.info.run_id})
        log_params(client, run.info.run_id, params)
        mlflow.set_tags({"colorray.stage": "train", "colorray.workers": r.num_workers,
                         "colorray.global_batch": t.batch_size,
                         "colorray.per_worker_batch": t.batch_size // r.num_workers,
                         **init_from.lineage_tags(parent)})
        tracking.log_shards(shards, "train")
        run_dir = Path(storage if "://" not in storage else tempfile.gettempdir()) / f"colorray-{run.info.run_id}"
        config = worker_config(params, shards, run.info.run_id, tracking_uri, run_dir,
                               fid_cache_dir(params, root), start_from, init_weights=init_weights)
        try:
            result = torch_trainer(params, config, f"colorray-{run.info.run_id}", storage).fit()
        except SystemExit:  # Ray Train's own Ctrl-C handler aborts the run and exits from inside fit()
            result = None
        if result is None or (result.checkpoint is not None and _final_iter(result) < t.iters):
            raise StageInterrupted(
                f"training stopped before iteration {t.iters}; its checkpoints are kept in {storage}/colorray-"
                f"{run.info.run_id} and no output was written. Run the stage again to continue it.")
        if result.checkpoint is None:
            raise RuntimeError("training ended without a checkpoint")
        with result.checkpoint.as_directory() as d:
            final = read_checkpoint(Path(d) / CHECKPOINT)
            rows = read_stats(Path(d))  # every report of the run, as rank 0 logged it
        torch_save_atomic(final, models_dir / CHECKPOINT)  # the full state, for train.resume
        G = generator_from_state(params, final["G"])
        precision = run_precision(client, run.info.run_id)
        json_path, csv_path = _write_outputs(rows, metrics_dir, precision)
        plot = metrics_dir / "loss_curves.png"
        _loss_plot(rows, plot)
        for path in (json_path, csv_path, plot):
            mlflow.log_artifact(str(path), artifact_path="train")
        # The evaluate stage reads the run id to link its evaluation run to this one.
        generator = models_dir / "generator.pt"
        # G and D (what fine-tuning from this model needs), the run, and the model it started from.
        meta = {"run_id": run.info.run_id, "parent": {k: v for k, v in parent.items() if v is not None}}
        save_generator(G, params, final["iter"], generator, D=final.get("D"), **meta)
        model = log_colorizer(generator, tags=init_from.lineage_tags(parent))  # weights + colorray's code
        model_uri = f"models:/{model.model_id}"
        save_generator(G, params, final["iter"], generator, D=final.get("D"), model_uri=model_uri, **meta)
    pending.unlink(missing_ok=True)  # finished: the next run with these parameters is a new one
    return {"run_id": run.info.run_id, "iterations": final["iter"], "model_uri": model_uri,
            "metrics": rows[-1] if rows else {}, "precision": precision}
