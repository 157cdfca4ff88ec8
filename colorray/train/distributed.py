"""Data-parallel GAN training on Ray Train (V2): the same GANTrainer on 1 CPU, N GPUs or a cluster.

The driver (`fit`) owns the MLflow run: it creates it, passes its id to the workers, and after
training logs the final generator as an MLflow model. So a worker group that Ray restarts
after a failure keeps logging to the same run. Workers (`train_loop_per_worker`) each stream
their own part of the shards (`plan_epoch` splits by rank), average gradients with one
all-reduce per optimizer step (`allreduce_mean_grads`), and call `ray.train.report` every
`ray.report_every` iterations, all ranks alike; rank 0 alone attaches the checkpoint and writes
to MLflow (DESIGN.md traps 4-6).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from colorray.atomic import write_json_atomic, write_text_atomic
from colorray.color import rgb_uint8_to_lab
from colorray.config import Params, StageInterrupted, flatten, parse_params, run_digest
from colorray.data.loader import make_loader
from colorray.models.files import save_generator
from colorray.train.loop import CHECKPOINT, batch_stream, check_resumable, validate
from colorray.precision import FP32
from colorray.progress import format_seconds
from colorray.train.step import GANTrainer, checkpoint_params, load_checkpoint, metric_values

EXPERIMENT = "colorray"


def default_tracking_uri(root: Path) -> str:
    """MLFLOW_TRACKING_URI if set, else a SQLite store in the project (absolute: Ray workers
    run in other folders)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


# ---- the worker ---------------------------------------------------------------------------------

PRECISION_TAG = "colorray.precision."  # MLflow tags of the mode the run computed in


def _mean_over_ranks(metrics: dict, device) -> dict:
    """Every rank's metrics averaged: one all-reduce, at report time only."""
    keys = sorted(metrics)
    t = torch.stack([torch.as_tensor(metrics[k], dtype=torch.float64).to(device) for k in keys])
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(t)
        t /= torch.distributed.get_world_size()
    return dict(zip(keys, t.tolist()))


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    params = parse_params(config["params"], origin="params (from the driver)")
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(config["threads"])))
    run_dir = Path(config["run_dir"])

    trainer = GANTrainer(params, device, rank=rank, world_size=world)  # rank 0 resolves `auto` for all
    checkpoint = ray.train.get_checkpoint()  # this run's latest, after a worker failure
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load_state_dict(torch.load(Path(d) / CHECKPOINT, map_location=device, weights_only=True))
    elif config.get("resume_from"):  # train.resume: a finished run's final state
        trainer.load_state_dict(torch.load(config["resume_from"], map_location=device, weights_only=True))
    elif config.get("resume_checkpoint"):  # a sweep trial promoted to the next rung: its state at the last
        with ray.train.Checkpoint(config["resume_checkpoint"]).as_directory() as d:  # (path or URI)
            trainer.load_state_dict(torch.load(Path(d) / CHECKPOINT, map_location=device, weights_only=True))
    t, r = params.train, params.ray
    # Where this run ends: train.iters, or a sweep rung (successive halving trains a trial in legs).
    end = min(t.iters, config.get("stop_at") or t.iters)
    local_batch = t.batch_size // world
    loader = make_loader(config["shards"], "train", local_batch, rank=rank, world_size=world,
                         num_workers=params.loader.num_workers, seed=t.seed,
                         dataset_size=params.data.dataset_size, shuffle_buffer=params.loader.shuffle_buffer,
                         pin_memory=device.type == "cuda")
    stream = batch_stream(loader, trainer.data_position)
    client = MlflowClient(config["tracking_uri"]) if rank == 0 else None
    fid = None
    if rank == 0 and config.get("fid_cache"):  # val/fid when the Inception weights are present
        from colorray.metrics.fid import inception_extractor

        fid = inception_extractor(params.metrics.fid_weights, device)
    run_id = config["run_id"]
    if rank == 0:
        print(f"[colorray] {world} worker(s), global batch {t.batch_size} = {local_batch} per worker, "
              f"device {device}, {trainer.precision.summary()}, starting at iteration {trainer.iter}", flush=True)
        client.log_batch(run_id, tags=[RunTag(PRECISION_TAG + k, str(v)) for k, v in trainer.precision.tags().items()])
    # Where each rank stands, for operators (and the tests): pid, node, iteration, batches read.
    status = {"rank": rank, "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
              "started_at_iter": trainer.iter, "iter": trainer.iter, "batches": 0}
    write_json_atomic(run_dir / f"worker-{rank}.json", status)

    images, start = 0, time.perf_counter()
    run_start, first = start, trainer.iter
    while trainer.iter < end:
        batches = [rgb_uint8_to_lab(next(stream)["rgb"], device) for _ in range(trainer.batches_needed())]
        metrics = trainer.train_iteration(batches)
        images += sum(len(b[0]) for b in batches) * world
        status["batches"] += len(batches)
        last = trainer.iter == end
        if trainer.iter % r.report_every and not last:
            continue
        elapsed = time.perf_counter() - start
        metrics = metric_values(metrics)  # the one wait for the device per report
        metrics["comm/share"] = trainer.comm_seconds / elapsed  # gradient all-reduce / step time
        trainer.comm_seconds = 0.0
        metrics = _mean_over_ranks(metrics, device)
        metrics["img/s"] = images / elapsed
        write_json_atomic(run_dir / f"worker-{rank}.json", {**status, "iter": trainer.iter})
        metrics["epoch"] = trainer.data_position["epoch"] + trainer.data_position["batch"] / max(1, len(loader))
        metrics["iter"] = trainer.iter
        if rank == 0:
            spent = time.perf_counter() - run_start
            left = spent / (trainer.iter - first) * (end - trainer.iter)
            print(f"[colorray] iteration {trainer.iter}/{end} ({100 * trainer.iter // end}%), {format_seconds(spent)}"
                  f"{', ~' + format_seconds(left) + ' left' if not last else ''}; {metrics['img/s']:.1f} img/s, "
                  f"loss/g/l1 {metrics.get('loss/g/l1', float('nan')):.4f}", flush=True)
            if trainer.iter % r.eval_every == 0 or last:
                val, grid = validate(trainer.G, Path(config["shards"]), device, fid=fid,
                                     fid_cache=config.get("fid_cache") and Path(config["fid_cache"]))
                metrics.update(val)
                client.log_image(run_id, grid, artifact_file=f"samples/iter_{trainer.iter:07d}.png")
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, float(v), now, trainer.iter) for k, v in metrics.items()])
        # Every rank reports, the same number of times; rank 0 attaches the checkpoint. report()
        # persists it to storage before returning, so the local copy can go right after.
        with tempfile.TemporaryDirectory(prefix="colorray-ckpt-") as tmp:
            ckpt = None
            if rank == 0 and (trainer.iter % t.checkpoint_every == 0 or last):
                trainer.save(Path(tmp) / CHECKPOINT)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)
        images, start = 0, time.perf_counter()


# ---- the driver ---------------------------------------------------------------------------------

def _experiment_id(client, root: Path) -> str:
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    # Artifacts next to the store, by absolute URI: workers log from other folders.
    return client.create_experiment(EXPERIMENT, artifact_location=(root / "mlruns").resolve().as_uri())


def _history(client, run_id: str) -> list[dict]:
    """Every reported row, rebuilt from MLflow by step (works with a remote tracking server)."""
    rows: dict[int, dict] = {}
    for key in client.get_run(run_id).data.metrics:
        for m in client.get_metric_history(run_id, key):
            rows.setdefault(m.step, {})[key] = m.value
    return [rows[s] for s in sorted(rows)]


def run_precision(client, run_id: str) -> dict:
    """The mode a run computed in, as its rank 0 tagged it (precision.tags()), with the tags'
    strings read back as numbers and booleans (dvc metrics shows and compares those)."""
    def value(text: str):
        if text in ("True", "False"):
            return text == "True"
        try:
            return float(text)
        except ValueError:
            return text

    tags = client.get_run(run_id).data.tags
    return {k[len(PRECISION_TAG):]: value(v) for k, v in tags.items() if k.startswith(PRECISION_TAG)}


def _write_outputs(history: list[dict], metrics_dir: Path, precision: dict) -> tuple[Path, Path]:
    """metrics/train.json (DVC metrics: the last report, and the precision the run used) and a
    per-epoch CSV (DVC plots)."""
    final = {k: v for k, v in history[-1].items()} if history else {}
    write_json_atomic(metrics_dir / "train.json", {**final, "precision": precision}, sort_keys=True)
    keys = ["epoch", "iter", "loss/d", "loss/g/adv", "loss/g/l1", "val/l1", "val/colorfulness", "val/delta_cf",
            "val/psnr", "val/ssim", "val/uiqi", "img/s"]
    per_epoch: dict[int, list[dict]] = {}
    for row in history:
        per_epoch.setdefault(int(row.get("epoch", 0)), []).append(row)
    lines = []
    for epoch, rows in sorted(per_epoch.items()):
        out = {"epoch": epoch, "iter": int(rows[-1].get("iter", 0))}
        for k in keys[2:]:
            vals = [r[k] for r in rows if k in r]
            out[k] = f"{np.mean(vals):.6g}" if vals else ""
        lines.append(out)
    csv_path = metrics_dir / "train_epochs.csv"
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=keys)
    w.writeheader()
    w.writerows(lines)
    write_text_atomic(csv_path, text.getvalue())
    return metrics_dir / "train.json", csv_path


def _loss_plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("loss/d", "loss/g/adv", "loss/g/l1", "val/l1"):
        pts = [(r["iter"], r[key]) for r in history if key in r and "iter" in r]
        if pts:
            ax.plot(*zip(*pts), label=key)
    ax.set_xlabel("iteration")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def init_ray() -> None:
    """Join RAY_ADDRESS's cluster if set, else start a private one on this machine that is
    reachable from this machine only: its node address is the loopback address, so every Ray
    process (GCS, raylet, workers, agents, dashboard, metrics) listens on 127.0.0.1 (DESIGN.md:
    Ray runs any code it is sent), on top of the token authentication Ray (>= 2.59) turns on
    for local instances. The dashboard stays, on loopback: Ray Train V2 needs it."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        local_only()
    ray.init(address=address or None, dashboard_host="127.0.0.1",
             runtime_env={"env_vars": {"MLFLOW_DISABLE_TELEMETRY": "true"}})


def local_only() -> None:
    """Make the Ray instance this process starts a single-machine one. Ray's own switch for
    that (what it does on macOS and Windows) is RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: the node IP
    becomes 127.0.0.1 and every server binds to it. The environment reaches Ray's processes; the
    constant is also set for a Ray already imported here."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def setup_mlflow(root: Path) -> tuple[str, str]:
    """Tracking URI and the project's experiment id (created on first use)."""
    import mlflow
    from mlflow import MlflowClient

    tracking_uri = default_tracking_uri(root)
    mlflow.set_tracking_uri(tracking_uri)
    return tracking_uri, _experiment_id(MlflowClient(tracking_uri), root)


def fid_cache_dir(params: Params, root: Path) -> str | None:
    """Where val/fid keeps real-image statistics, or None when the Inception weights are absent
    (val/fid is then not computed; colorray.metrics.fid says where to put them)."""
    from colorray.metrics.fid import fid_available

    return str(root / "data" / "fid_cache") if fid_available(params.metrics.fid_weights) else None


def log_params(client, run_id: str, params: Params) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)) for k, v in flatten(params.model_dump(mode="json")).items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def torch_trainer(params: Params, config: dict, name: str, storage: str, callbacks=()):
    """A Ray Train TorchTrainer running `train_loop_per_worker` as params.ray says."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    r = params.ray
    resources = {"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if r.use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu,
                                     resources_per_worker=resources, placement_strategy=r.placement_strategy),
        run_config=RunConfig(name=name, storage_path=storage, callbacks=list(callbacks),
                             failure_config=FailureConfig(max_failures=r.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))


def worker_config(params: Params, shards: Path, run_id: str, tracking_uri: str, run_dir: Path,
                  fid_cache: str | None = None, resume_from: str | None = None,
                  resume_checkpoint: str | None = None, stop_at: int | None = None) -> dict:
    """resume_from: a model.pt file (train.resume); resume_checkpoint: a Ray Train checkpoint
    (path or URI) to continue; stop_at: end there instead of at train.iters."""
    return {"params": params.model_dump(mode="json"), "shards": str(shards), "run_id": run_id,
            "tracking_uri": tracking_uri, "threads": params.ray.cpus_per_worker, "run_dir": str(run_dir),
            "resume_from": resume_from, "fid_cache": fid_cache, "resume_checkpoint": resume_checkpoint,
            "stop_at": stop_at}


def check_batches(params: Params, shards: Path) -> None:
    """Refuse a batch that the (subset of the) training split cannot fill once."""
    from colorray.data.shards import read_manifest

    count = read_manifest(shards)["splits"]["train"]["count"]
    size = min(count, params.data.dataset_size or count)
    if params.train.batch_size > size:
        raise ValueError(f"train.batch_size={params.train.batch_size} is larger than the training data "
                         f"({size} images{' with data.dataset_size' if params.data.dataset_size else ''})")


PENDING = "train-pending.json"  # in <root>/ray_results: the run an interrupted train stage continues


def _run_key(params: Params, shards: Path, resume_from: str | None) -> str:
    """What makes a training run the same one: its parameters, its data, its starting state and
    the colorray code."""
    start = Path(resume_from).read_bytes() if resume_from else b""
    return run_digest(params, (shards / "manifest.json").read_bytes(), start)[:16]


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


def fit(params: Params, shards: Path, root: Path, models_dir: Path, metrics_dir: Path,
        resume: bool = False, run_name: str | None = None) -> dict:
    """Train with Ray Train and record everything; returns a summary."""
    import mlflow
    from mlflow import MlflowClient

    r, t = params.ray, params.train
    shards, root = Path(shards).resolve(), Path(root).resolve()
    check_batches(params, shards)
    models_dir.mkdir(parents=True, exist_ok=True)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    tracking_uri, experiment_id = setup_mlflow(root)
    client = MlflowClient(tracking_uri)

    resume_from = None
    saved = models_dir / CHECKPOINT
    if resume and saved.exists():
        check_resumable(checkpoint_params(saved), params, saved)
        resume_from = str(saved.resolve())  # Ray Train V2 has no resume_from_checkpoint: workers load it

    init_ray()
    storage = r.storage_path or str(root / "ray_results")
    # An interrupted train stage (Ctrl-C, a crash) left its run unfinished: the same parameters,
    # data and code continue that run (its MLflow run, and its Ray Train run, whose latest
    # checkpoint the workers get back from storage); anything else starts a new one.
    pending = root / "ray_results" / PENDING
    key = _run_key(params, shards, resume_from)
    run_id = _pending_run(pending, key, client)
    if run_id:
        print(f"train: continuing the interrupted run {run_id} from its last checkpoint", flush=True)
    with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                          run_name=None if run_id else run_name) as run:
        if run_id is None:
            write_json_atomic(pending, {"key": key, "run_id": run.info.run_id})
        log_params(client, run.info.run_id, params)
        mlflow.set_tags({"colorray.stage": "train", "colorray.workers": r.num_workers,
                         "colorray.global_batch": t.batch_size,
                         "colorray.per_worker_batch": t.batch_size // r.num_workers})
        run_dir = Path(storage if "://" not in storage else tempfile.gettempdir()) / f"colorray-{run.info.run_id}"
        config = worker_config(params, shards, run.info.run_id, tracking_uri, run_dir,
                               fid_cache_dir(params, root), resume_from)
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
            final = load_checkpoint(Path(d) / CHECKPOINT, precision=FP32)  # only re-saved, not trained
        final.save(models_dir / CHECKPOINT)  # the full state, for train.resume
        history = _history(client, run.info.run_id)
        precision = run_precision(client, run.info.run_id)
        json_path, csv_path = _write_outputs(history, metrics_dir, precision)
        plot = metrics_dir / "loss_curves.png"
        _loss_plot(history, plot)
        for path in (json_path, csv_path, plot):
            mlflow.log_artifact(str(path), artifact_path="train")
        # The evaluate stage reads the run id to link its evaluation run to this one.
        generator = models_dir / "generator.pt"
        save_generator(final.G, params, final.iter, generator, run_id=run.info.run_id)
        from colorray.pyfunc import log_colorizer

        model_uri = log_colorizer(generator).model_uri  # weights + colorray's code: nothing pickled
        save_generator(final.G, params, final.iter, generator, run_id=run.info.run_id, model_uri=model_uri)
    pending.unlink(missing_ok=True)  # finished: the next run with these parameters is a new one
    return {"run_id": run.info.run_id, "iterations": final.iter, "model_uri": model_uri,
            "metrics": history[-1] if history else {}, "precision": precision}
