"""The tune stage end to end: a sweep on a two-node loopback cluster with nested MLflow runs
and its winner. (An interrupted sweep that resumes only the unfinished trials: Ctrl-C during
`dvc repro`, in test_pipeline.py.) Small networks and budgets: these test the machinery, docs/benchmarks.md the results."""
import csv
import glob
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, VAL_IMAGES

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("clusters")]

TINY = {"g_channels": 4, "g_channels_max": 16, "d_channels": 4, "g_depth": 3}


def _params(tmp_path, train=None, **tune) -> Path:
    raw = {"model": TINY, "loader": {"num_workers": 0}, "ray": {"storage_path": str(tmp_path / "ray")},
           "metrics": {"val_images": VAL_IMAGES},
           "train": train or {},
           "tune": {"num_samples": 6, "iters": 8, "report_every": 4, "grace_iters": 4,
                    "reduction_factor": 3, "max_concurrent_trials": 2, **tune}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cmd(tmp_path, params, shards):
    return [sys.executable, "-m", "colorray.cli", "tune", "--params", str(params), "--shards", str(shards),
            "--root", str(tmp_path), "--out", str(tmp_path / "tune")]


def _results(tmp_path) -> list[dict]:
    with open(tmp_path / "tune" / "results.csv") as f:
        return list(csv.DictReader(f))


def _client(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return client, client.get_experiment_by_name("colorray").experiment_id


def _worker_statuses(tmp_path) -> dict[tuple[str, int], dict]:
    """(trial id, rank) -> what that training process of the trial last wrote of itself (in
    the folder <trial id>-<start time>: one trial start each here)."""
    return {(Path(f).parent.name.rsplit("-", 1)[0], int(Path(f).stem.split("-")[1])): json.loads(Path(f).read_text())
            for f in glob.glob(str(tmp_path / "ray" / "sweep-*" / "train" / "*" / "worker-*.json"))}


def _starts(tmp_path) -> list[dict]:
    """One line per trial start: its id, lineage and the pid of the trial's process."""
    from colorray.sweep.run import STARTS

    (path,) = glob.glob(str(tmp_path / "ray" / "sweep-*" / STARTS))
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_a_sweep_on_a_two_node_cluster_records_nested_runs_and_its_winner(tmp_path, skimage_shards, readme_cluster):
    """On the cluster the README's commands started (two nodes of one CPU). (The DVC test in
    test_pipeline.py checks that the train stage then uses the winner.)"""
    params = _params(tmp_path)
    r = subprocess.run(_cmd(tmp_path, params, skimage_shards), cwd=ROOT, env=readme_cluster["env"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = _results(tmp_path)

    assert len(rows) == 6 and {row["outcome"] for row in rows} <= {"completed", "stopped early"}
    stopped = sum(row["outcome"] == "stopped early" for row in rows)
    assert stopped >= 1 and all(int(row["iter"]) == (4 if row["outcome"] == "stopped early" else 8) for row in rows)
    assert f"{stopped} stopped early by ASHA" in r.stdout
    # Knobs that do not apply are not sampled: the clip only for WGAN trials.
    assert all((row["knob/gan/clip"] != "") == (row["knob/gan/objective"] == "wgan") for row in rows)
    # Trials ran on both nodes, each in its own process (one worker: no Ray Train run).
    statuses = _worker_statuses(tmp_path)
    assert len({st["node_id"] for st in statuses.values()}) == 2
    trial_pids = {start["trial_id"]: start["pid"] for start in _starts(tmp_path)}
    assert len(trial_pids) == 6 and {trial: st["pid"] for (trial, _), st in statuses.items()} == trial_pids

    best = yaml.safe_load((tmp_path / "tune" / "best_params.yaml").read_text())
    best_row = min((row for row in rows if row["outcome"] == "completed"), key=lambda row: float(row["score"]))
    assert best["gan"]["l1_weight"] == float(best_row["knob/gan/l1_weight"])
    assert best["train"]["batch_size"] == int(best_row["knob/train/batch_size"])

    client, exp = _client(tmp_path)
    parents = client.search_runs([exp], filter_string="tags.`colorray.stage` = 'tune'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert len(children) == 6
    by_trial = {row["trial_id"]: row for row in rows}
    for child in children:
        row = by_trial[child.data.tags["colorray.trial_id"]]
        assert row["mlflow_run_id"] == child.info.run_id and child.info.status == "FINISHED"
        assert child.data.tags["colorray.outcome"] == row["outcome"]
        # the mode the trial computed in (train.amp: auto, resolved in its worker)
        assert child.data.tags["colorray.precision.amp"] in ("none", "bf16")
        assert child.data.tags["colorray.precision.source"] in ("probe", "cache")
        assert child.data.params["gan.l1_weight"] == row["knob/gan/l1_weight"]  # same names as train
        assert child.data.params["train.iters"] == "8"
        # A stopped trial may train on for a moment before Tune's stop reaches it; iters_run counts that.
        assert child.data.metrics["iter"] == float(row["iters_run"]) >= float(row["iter"])
        history = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "val/delta_cf")}
        assert history[int(row["iter"])] == pytest.approx(float(row["val/delta_cf"]))
        assert child.data.metrics["val/images"] == VAL_IMAGES


def test_a_trial_of_two_workers_is_a_ray_train_run_over_both_nodes(tmp_path, skimage_shards, readme_cluster):
    """tune.num_workers: 2: the trial is a data-parallel Ray Train run (one worker a node here,
    neither in the trial's own process) whose reports reach Tune and the trial's MLflow run."""
    params = _params(tmp_path, train={"amp": "none", "channels_last": False},  # no precision probe: not under test
                     num_samples=1, iters=4, report_every=4, grace_iters=4, scheduler="none",
                     num_workers=2, max_concurrent_trials=1)
    r = subprocess.run(_cmd(tmp_path, params, skimage_shards), cwd=ROOT, env=readme_cluster["env"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (row,) = _results(tmp_path)
    assert row["outcome"] == "completed" and int(row["iter"]) == 4 and row["checkpoint"]
    statuses = {rank: st for (_, rank), st in _worker_statuses(tmp_path).items()}
    assert sorted(statuses) == [0, 1] and statuses[0]["node_id"] != statuses[1]["node_id"]
    assert all(st["iter"] == 4 for st in statuses.values())
    (start,) = _starts(tmp_path)
    assert start["pid"] not in {st["pid"] for st in statuses.values()}
    client, exp = _client(tmp_path)
    (child,) = client.search_runs([exp], filter_string="tags.`colorray.stage` = 'tune-trial'")
    assert child.info.status == "FINISHED" and child.data.metrics["iter"] == 4
    assert child.data.tags["colorray.checkpoint"] == row["checkpoint"]
    assert child.data.metrics["val/delta_cf"] == pytest.approx(float(row["val/delta_cf"]))
