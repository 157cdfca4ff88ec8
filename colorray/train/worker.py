"""The Ray Train side of training: what every worker runs (`train_loop_per_worker`), the
TorchTrainer that runs it as params.ray says, and the Ray instance it runs on. The same loop
(`run_loop`) runs in a one-worker sweep trial's own process (colorray.sweep.run): a `Session`
says where it runs.

Workers each stream their own part of the shards (`plan_epoch` splits by rank), average
gradients with one all-reduce per optimizer step (`allreduce_mean_grads`), and call
`ray.train.report` every `ray.report_every` iterations, all ranks alike; rank 0 alone attaches
the checkpoint and writes to MLflow, into the run the driver (colorray.train.distributed)
created, so a worker group that Ray restarts after a failure keeps logging to the same run.
Rank 0 also keeps every report row and stores them with each checkpoint (STATS): what the
driver writes for DVC comes from there, and survives a restart with the checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ray
import ray.train
import ray.train.torch
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from colorray.atomic import write_json_atomic
from colorray.config import Params, parse_params
from colorray.data.loader import make_loader
from colorray.metrics.fid import inception_extractor
from colorray.progress import format_seconds
from colorray.tracking import PRECISION_TAG
from colorray.train import init_from
from colorray.train.loop import CHECKPOINT, batch_stream, next_iteration, validate
from colorray.train.step import GANTrainer, metric_values


STATS = "stats.jsonl"  # in every checkpoint: rank 0's report rows so far, one JSON object a line


def read_stats(checkpoint_dir: Path) -> list[dict]:
    """The report rows a checkpoint carries (none in a checkpoint that has no STATS)."""
    path = checkpoint_dir / STATS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _mean_over_ranks(metrics: dict, device) -> dict:
    """Every rank's metrics averaged: one all-reduce, at report time only."""
    keys = sorted(metrics)
    t = torch.stack([torch.as_tensor(metrics[k], dtype=torch.float64).to(device) for k in keys])
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(t)
        t /= torch.distributed.get_world_size()
    return dict(zip(keys, t.tolist()))


@dataclass
class Session:
    """Where the training loop runs: its rank among `world` processes, its device, the
    checkpoint it continues (a restarted run's latest, or None), how it reports a row of metrics
    with an optional checkpoint folder, and the Checkpoint class of that API."""
    rank: int
    world: int
    device: torch.device
    checkpoint: Any
    report: Callable[[dict, Any], None]
    checkpoint_type: type


def train_session() -> Session:
    """A Ray Train worker's session (its process group is already set up)."""
    ctx = ray.train.get_context()
    return Session(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(),
                   ray.train.get_checkpoint(), lambda m, c: ray.train.report(m, checkpoint=c),
                   ray.train.Checkpoint)


def tune_session() -> Session:
    """The session of a Ray Tune trial that trains in its own process (one worker, rank 0): Tune
    gives it the checkpoint to continue and takes its reports; Ray has set CUDA_VISIBLE_DEVICES
    to the trial's GPU, if it has one."""
    import ray.tune

    device = torch.device("cuda", 0) if ray.get_gpu_ids() else torch.device("cpu")
    return Session(0, 1, device, ray.tune.get_checkpoint(), lambda m, c: ray.tune.report(m, checkpoint=c),
                   ray.tune.Checkpoint)


def train_loop_per_worker(config: dict) -> None:
    """What every Ray Train worker runs."""
    run_loop(config, train_session())


def run_loop(config: dict, session: Session) -> None:
    rank, world, device = session.rank, session.world, session.device
    params = parse_params(config["params"], origin="params (from the driver)")
    torch.set_num_threads(max(1, int(config["threads"])))
    run_dir = Path(config["run_dir"])

    trainer = GANTrainer(params, device, rank=rank, world_size=world)  # rank 0 resolves `auto` for all
    # Where the run starts: this run's latest checkpoint (Ray restarted the workers after a
    # failure), else config["start_from"] (train.resume: a finished run's state; a sweep trial
    # promoted to the next rung: its last one), else from scratch.
    checkpoint = session.checkpoint
    if checkpoint is None and config.get("start_from"):
        checkpoint = session.checkpoint_type(config["start_from"])
    stats: list[dict] = []  # rank 0's report rows, kept with every checkpoint (STATS)
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load_state_dict(torch.load(Path(d) / CHECKPOINT, map_location=device, weights_only=True))
            stats = read_stats(Path(d))
    # A new run with train.init_from: its nets start from that model's weights (models/init.pt),
    # with fresh optimizers and iteration count.
    init = init_from.load(config["init_weights"]) if checkpoint is None and config.get("init_weights") else None
    if init is not None:
        init_from.apply(trainer, init, log=print if rank == 0 else lambda m: None)
    t, r = params.train, params.ray
    # Where this run ends: train.iters, or a sweep rung (successive halving trains a trial in legs).
    end = min(t.iters, config.get("stop_at") or t.iters)
    local_batch = t.batch_size // world
    loader = make_loader(config["shards"], "train", local_batch, rank=rank, world_size=world,
                         num_workers=params.loader.num_workers, seed=t.seed,
                         dataset_size=params.data.dataset_size, shuffle_buffer=params.loader.shuffle_buffer,
                         flip=params.loader.flip,
                         pin_memory=device.type == "cuda")
    stream = batch_stream(loader, trainer.data_position)
    client = MlflowClient(config["tracking_uri"]) if rank == 0 else None
    fid = None
    if rank == 0 and config.get("fid_cache"):  # val/fid when the Inception weights are present
        fid = inception_extractor(params.metrics.fid_weights, device)

    def val_metrics():
        """Rank 0's val metrics of the generator now, and its sample grid."""
        return validate(trainer.G, config["shards"], device, params.metrics.val_images, fid=fid,
                        fid_cache=config.get("fid_cache") and Path(config["fid_cache"]))

    run_id = config["run_id"]
    if rank == 0:
        print(f"[colorray] {world} worker(s), global batch {t.batch_size} = {local_batch} per worker, "
              f"device {device}, {trainer.precision.summary()}, starting at iteration {trainer.iter}", flush=True)
        client.log_batch(run_id, tags=[RunTag(PRECISION_TAG + k, str(v)) for k, v in trainer.precision.tags().items()])
        if init is not None:  # where a fine-tuning starts: the starting model's val metrics, at step 0
            val, grid = val_metrics()
            client.log_image(run_id, grid, artifact_file=f"samples/iter_{0:07d}.png")
            client.log_batch(run_id, metrics=[Metric(k, float(v), int(time.time() * 1000), 0) for k, v in val.items()])
    # Where each rank stands, for operators (and the tests): pid, node, iteration, batches read.
    status = {"rank": rank, "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
              "started_at_iter": trainer.iter, "iter": trainer.iter, "batches": 0}
    write_json_atomic(run_dir / f"worker-{rank}.json", status)

    images, start = 0, time.perf_counter()
    run_start, first = start, trainer.iter
    while trainer.iter < end:
        metrics, read, n = next_iteration(trainer, stream, device)
        images += read * world
        status["batches"] += n
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
                val, grid = val_metrics()
                metrics.update(val)
                client.log_image(run_id, grid, artifact_file=f"samples/iter_{trainer.iter:07d}.png")
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, float(v), now, trainer.iter) for k, v in metrics.items()])
            stats.append({k: float(v) for k, v in metrics.items()})
        # Every rank reports, the same number of times; rank 0 attaches the checkpoint. report()
        # persists it to storage before returning, so the local copy can go right after.
        with tempfile.TemporaryDirectory(prefix="colorray-ckpt-") as tmp:
            ckpt = None
            if rank == 0 and (trainer.iter % t.checkpoint_every == 0 or last):
                trainer.save(Path(tmp) / CHECKPOINT)
                (Path(tmp) / STATS).write_text("".join(json.dumps(row) + "\n" for row in stats))
                ckpt = session.checkpoint_type.from_directory(tmp)
            session.report(metrics, ckpt)
        images, start = 0, time.perf_counter()


def torch_trainer(params: Params, config: dict, name: str, storage: str, callbacks=()):
    """A Ray Train TorchTrainer running `train_loop_per_worker` as params.ray says."""
    r = params.ray
    resources = {"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if r.use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu,
                                     resources_per_worker=resources, placement_strategy=r.placement_strategy),
        run_config=RunConfig(name=name, storage_path=storage, callbacks=list(callbacks),
                             failure_config=FailureConfig(max_failures=r.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))


def worker_config(params: Params, shards: str, run_id: str, tracking_uri: str, run_dir: Path,
                  fid_cache: str | None = None, start_from: str | None = None, stop_at: int | None = None,
                  init_weights: Path | None = None) -> dict:
    """start_from: a Ray Train checkpoint to continue (a path or URI of a folder holding
    CHECKPOINT); stop_at: end there instead of at train.iters; init_weights: models/init.pt, the
    weights a new run starts from (train.init_from; ignored when continuing a checkpoint)."""
    return {"params": params.model_dump(mode="json"), "shards": str(shards), "run_id": run_id,
            "tracking_uri": tracking_uri, "threads": params.ray.cpus_per_worker, "run_dir": str(run_dir),
            "fid_cache": fid_cache, "start_from": start_from, "stop_at": stop_at,
            "init_weights": str(init_weights) if init_weights else None}


def init_ray() -> None:
    """Join RAY_ADDRESS's cluster if set, else start a private one on this machine that is
    reachable from this machine only: its node address is the loopback address, so every Ray
    process (GCS, raylet, workers, agents, dashboard, metrics) listens on 127.0.0.1 (Ray runs any
    code it is sent, so nobody else may reach it), on top of the token authentication Ray (>= 2.59) turns on
    for local instances. The dashboard stays, on loopback: Ray Train V2 needs it."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        local_only()
    # "local", not None: ray.init() without an address joins any cluster `ray start` left running
    # on this machine (/tmp/ray/ray_current_cluster) instead of starting the private one.
    # No runtime_env: a job with one starts every worker through Ray's setup process (about a
    # CPU-second more each) and cannot use the workers Ray starts ahead. (MLflow's telemetry is
    # off in the workers all the same: colorray/__init__.py, imported before MLflow there.)
    ray.init(address=address or "local", dashboard_host="127.0.0.1")


def local_only() -> None:
    """Make the Ray instance this process starts a single-machine one. Ray's own switch for
    that (what it does on macOS and Windows) is RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: the node IP
    becomes 127.0.0.1 and every server binds to it. The environment reaches Ray's processes; the
    constant is also set for a Ray already imported here."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
