"""Ray Train on the two-node loopback cluster the README's commands start: uneven shards, a
killed worker; then, from that run, train.resume with Ctrl-C and a training that starts from
its logged model (train.init_from), on the same cluster (the local Ray instance that stages
start without RAY_ADDRESS: test_pipeline.py, test_local_ray.py). Four tests here and the README's
cluster test examine the one cluster run (conftest's cluster_run).
(Equivalence of 1 and 2 workers, and the local instance's listeners: test_local_ray.py.)
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from colorray.data.loader import ShardStream
from colorray.data.shards import read_manifest
from conftest import ROOT, RUN_ITERS, VAL_IMAGES, project_params, serve_folder, train_cmd, worker_statuses

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("clusters")]


def _mlflow_runs(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("colorray")
    return client, client.search_runs([exp.experiment_id])


def test_uneven_shards_over_http_on_a_two_node_cluster_give_every_rank_the_same_steps(cluster_run, uneven_shards):
    tmp_path, _, returncode, out, served = cluster_run
    assert returncode == 0, out[-4000:]
    shard_names = {sh["name"] for sh in read_manifest(uneven_shards)["splits"]["train"]["shards"]}
    assert shard_names & {p.lstrip("/") for p in served}  # the training data came over HTTP
    # What each rank streams in an epoch: disjoint samples, the same number of batches
    # (ShardStream as the workers build it: 4 images a rank from the same URL).
    with serve_folder(uneven_shards) as url:
        keys = [[k for b in ShardStream(url, "train", 4, rank=r, world_size=2) for k in b["key"]] for r in (0, 1)]
    assert keys[0] and len(keys[0]) == len(keys[1]) and not set(keys[0]) & set(keys[1])
    st = worker_statuses(tmp_path)
    assert set(st) == {0, 1}
    assert st[0]["node_id"] != st[1]["node_id"]  # one worker per node
    assert st[0]["iter"] == st[1]["iter"] == RUN_ITERS
    # n_critic = 1: one batch per step, counted since the workers (re)started.
    assert st[0]["batches"] == st[1]["batches"] == RUN_ITERS - st[0]["started_at_iter"]


def test_a_killed_worker_is_replaced_and_training_resumes_in_the_same_mlflow_run(cluster_run):
    tmp_path, killed, returncode, out, _ = cluster_run
    assert returncode == 0, out[-4000:]
    st = worker_statuses(tmp_path)
    assert st[1]["pid"] != killed["pid"]  # a new worker process took rank 1
    assert st[0]["started_at_iter"] > 0 and st[0]["started_at_iter"] % 4 == 0  # from the last checkpoint
    client, runs = _mlflow_runs(tmp_path)
    assert len(runs) == 1  # one MLflow run, not two
    history = client.get_metric_history(runs[0].info.run_id, "iter")
    assert max(m.value for m in history) == RUN_ITERS == runs[0].data.metrics["iter"]


def test_train_resume_continues_a_finished_run_and_ctrl_c_then_rerun_continues_that(cluster_run, uneven_shards,
                                                                                      tmp_path, readme_cluster):
    """train.resume on (a copy of) the finished run above, on the same cluster: it
    starts from the run's final state, not from 0. Ctrl-C part-way: exit 130, nothing written;
    the same command again continues that run (its MLflow run, its last checkpoint)."""
    run_dir, _, returncode, out, _ = cluster_run
    assert returncode == 0, out[-4000:]
    shutil.copytree(run_dir, tmp_path, dirs_exist_ok=True)
    first_run = glob.glob(str(tmp_path / "ray" / "colorray-*"))
    generator_before = (tmp_path / "models" / "generator.pt").read_bytes()
    end = RUN_ITERS + 12
    params = project_params(tmp_path, train={"iters": end, "resume": True})
    proc = subprocess.Popen(train_cmd(tmp_path, params, uneven_shards), cwd=ROOT, env=readme_cluster["env"],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a terminal's Ctrl-C
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            new = [f for f in glob.glob(str(tmp_path / "ray" / "colorray-*" / "worker-0.json"))
                   if str(Path(f).parent) not in first_run]
            if new and json.loads(Path(new[0]).read_text())["iter"] >= RUN_ITERS + 8:  # past a checkpoint
                os.killpg(proc.pid, signal.SIGINT)
                break
            time.sleep(0.2)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "interrupted" in out, out[-3000:]
    assert (tmp_path / "models" / "generator.pt").read_bytes() == generator_before  # nothing written

    r = subprocess.run(train_cmd(tmp_path, params, uneven_shards), cwd=ROOT, env=readme_cluster["env"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "continuing the interrupted run" in r.stdout
    state = torch.load(tmp_path / "models" / "checkpoint.pt", weights_only=True)
    assert state["iter"] == end
    (resumed,) = [f for f in glob.glob(str(tmp_path / "ray" / "colorray-*" / "worker-0.json"))
                  if str(Path(f).parent) not in first_run]  # one Ray Train run, continued
    started = json.loads(Path(resumed).read_text())["started_at_iter"]
    assert RUN_ITERS + 4 <= started < end and started % 4 == 0  # from its last checkpoint, past the first run
    client, runs = _mlflow_runs(tmp_path)
    assert len(runs) == 2  # the cluster run, and this one (interrupted, then continued)
    history = client.get_metric_history(runs[0].info.run_id, "iter")
    assert max(m.value for m in history) == end and min(m.value for m in history) == RUN_ITERS + 2


def test_training_from_a_logged_model_starts_at_its_val_metrics_and_names_its_parent(cluster_run, uneven_shards,
                                                                                     tmp_path, readme_cluster):
    """train.init_from = models:/<model_id> of the cluster run's model: the new run loads its G
    and D, logs that model's own val metrics at step 0 (the weights really loaded), is tagged
    with its parent, and may change any other parameter (here lr, iters, workers)."""
    from colorray.models.files import load_generator
    from colorray.train.loop import validate

    run_dir, _, returncode, out, _ = cluster_run
    assert returncode == 0, out[-4000:]
    shutil.copytree(run_dir, tmp_path, dirs_exist_ok=True)  # its MLflow store; artifacts stay where they are
    source, _, meta = load_generator(tmp_path / "models" / "generator.pt")
    model_id = meta["model_uri"].removeprefix("models:/")
    params = project_params(tmp_path, train={"iters": 4, "init_from": meta["model_uri"], "lr_g": 1e-4,
                                             "amp": "none", "channels_last": False},
                            ray={"num_workers": 1, "report_every": 2, "eval_every": 4})
    cmd = train_cmd(tmp_path, params, uneven_shards)
    cmd[cmd.index("--models") + 1] = str(tmp_path / "finetuned")
    r = subprocess.run(cmd, cwd=ROOT, env=readme_cluster["env"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "G and D from the starting model" in r.stdout + r.stderr

    client, runs = _mlflow_runs(tmp_path)
    (run,) = [x for x in runs if x.data.tags.get("colorray.parent.model_id") == model_id]
    assert run.data.tags["colorray.parent.init_from"] == meta["model_uri"] and model_id in run.info.run_name
    start = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/l1")}
    expected, _ = validate(source, uneven_shards, "cpu", max_images=VAL_IMAGES)
    assert start[0] == pytest.approx(expected["val/l1"], rel=1e-5) and set(start) == {0, 4}
    record = json.loads((tmp_path / "finetuned" / "init.json").read_text())
    assert record["model_id"] == model_id and record["discriminator"] is True
    (inp,) = run.inputs.dataset_inputs  # the Dataset column of the runs table
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "train"
    (model,) = [m for m in client.search_logged_models([run.info.experiment_id]) if m.source_run_id == run.info.run_id]
    assert model.tags["colorray.parent.model_id"] == model_id
    assert set(torch.load(tmp_path / "finetuned" / "generator.pt", weights_only=True)) >= {"G", "D", "parent"}
