"""The DVC DAG end to end, on a copy of this project in a fresh git repository."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, VAL_IMAGES, tiny_imagenet_zip

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dag")]


def _sh(cmd, cwd, env):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


@pytest.fixture
def project(tmp_path):
    """What a fresh clone holds (tracked and not-ignored files), committed in a new repo."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    dest = tmp_path / "project"
    for f in filter(None, files):
        if (ROOT / f).is_file() and not f.startswith("base/"):  # base/: the base model's own pipeline
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    # A tiny, fast training budget: this test is about the DAG, not about the GAN. The nets are
    # the default's (the demo preset's), which fine-tune the shipped base model (train.init_from).
    params = yaml.safe_load((dest / "params.yaml").read_text())
    assert params["train"]["init_from"] == "builtin:base"
    params["train"].update({"iters": 4, "batch_size": 8, "checkpoint_every": 2})
    params["ray"].update({"report_every": 2, "eval_every": 4, "cpus_per_worker": 1})
    params["loader"].update({"num_workers": 0})
    params["classifier"].update({"epochs": 1, "max_train_images": 128})
    params["metrics"]["val_images"] = VAL_IMAGES  # each val evaluation of the trials and the training run
    params["evaluate"].update({"max_images": 64, "grid_images": 4, "diversity_images": 2, "diversity_samples": 2})
    params["tune"].update({"enabled": False, "num_samples": 1, "iters": 4, "report_every": 2, "grace_iters": 2,
                           "scheduler": "none"})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "clone"]):
        _sh(cmd, dest, env)
    return dest, env


def _set_param(project_dir, key, value):
    p = project_dir / "params.yaml"
    params = yaml.safe_load(p.read_text())
    section, name = key.split(".")
    params[section][name] = value
    p.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.timeout(1200)  # the whole DAG five times: minutes on 2 cores
def test_repro_then_noop_then_only_the_affected_stages(project):
    """The whole DAG. Its first `dvc repro` is interrupted with Ctrl-C in the tune stage's
    successive-halving sweep (nothing written, tune still listed by `dvc status`); the next
    `dvc repro` resumes the sweep and builds the rest; then a no-op, then one changed stage."""
    proj, env = project
    first, interrupted = _ctrl_c_during_tune(proj, env)
    assert "Running stage 'fetch'" in first and "Running stage 'shard'" in first
    out = _sh(["dvc", "repro"], proj, env)
    _check_resumed_sweep(proj, out, interrupted)
    for stage in ("tune", "train", "baseline", "classifier", "evaluate"):
        assert f"Running stage '{stage}'" in out
    manifest = json.loads((proj / "data/shards/manifest.json").read_text())
    assert manifest["source"] == "skimage" and manifest["kept"] > 3000
    train_json = json.loads((proj / "metrics/train.json").read_text())
    assert train_json["iter"] == 4
    # train.amp: auto, resolved by the worker and recorded with the run's metrics
    assert train_json["precision"]["amp"] in ("none", "bf16") and train_json["precision"]["source"] in ("probe", "cache")
    assert _train_run(proj).data.tags["colorray.precision.amp"] == train_json["precision"]["amp"]
    assert isinstance(train_json["precision"]["channels_last"], bool) and train_json["precision"]["probe_s"] >= 0
    shown = _sh(["dvc", "metrics", "show"], proj, env)
    assert "loss/d" in shown and "eval/metrics.json" in shown and "gan.delta_cf" in shown
    _check_mlflow(proj)
    _check_evaluation(proj, out)
    # The train stage used the sweep's winner (the logged run's parameters say so).
    best = yaml.safe_load((proj / "tune/best_params.yaml").read_text())
    assert best["gan"]["l1_weight"] and best["train"]["batch_size"]
    params = _train_run(proj).data.params
    assert all(params[f"{s}.{k}"] == str(v) for s, values in best.items() for k, v in values.items())
    html = _sh(["dvc", "plots", "show", "--json"], proj, env)
    assert "tune/results.csv" in html and "metrics/train_epochs.csv" in html
    _check_tuned_values_are_params(proj, env, best)

    out = _sh(["dvc", "repro"], proj, env)
    assert _ran(out) == ["init"] and "Stage 'train' didn't change, skipping" in out  # init: always run
    _check_dvc_sees_defaults_and_code(proj, env)
    _check_init_stage_follows_the_alias(proj, env)

    # Back to the shipped base model, and a change in the middle of the DAG: the init stage writes
    # the committed weights again (tune, train and the baseline are up to date once more), and the
    # changed stage re-runs with what depends on it, nothing else.
    _set_param(proj, "train.init_from", "builtin:base")
    _set_param(proj, "classifier.seed", 1)  # another initialisation, the same work
    out = _sh(["dvc", "repro"], proj, env)
    assert _ran(out) == ["init", "classifier", "evaluate"]
    assert "Stage 'train' didn't change, skipping" in out
    assert json.loads((proj / "eval/metrics.json").read_text())["gan"]["images"] == 64
    _check_a_fresh_clone_runs_its_own_sweep(proj, env)


def _check_a_fresh_clone_runs_its_own_sweep(proj, env):
    """What was committed (dvc.lock, tune/best_params.yaml) and a clone of it: the clone has no
    MLflow store and no tune/sweep.json (this machine's record of the sweep, git-ignored), so
    for DVC its tune stage has changed (that file is its output), whatever else the clone lacks:
    its `dvc repro` runs the sweep into its own store, as the first `dvc repro` of this test did
    (one parent run, one nested run per trial: _check_resumed_sweep), where the project's own
    tune stage is up to date. The tuned values stay visible to `dvc params diff` and
    `dvc exp show` there."""
    assert _sh(["git", "check-ignore", "tune/sweep.json"], proj, env).strip() == "tune/sweep.json"
    assert "tune" not in _stale(proj, env)
    _sh(["git", "add", "-A"], proj, env)
    _sh(["git", "commit", "-qm", "the results of a run"], proj, env)
    clone = proj.parent / "clone"
    _sh(["git", "clone", "-q", str(proj), str(clone)], proj.parent, env)
    assert not (clone / "tune/sweep.json").exists() and not (clone / "mlflow.db").exists()
    assert {"changed outs": {"tune/sweep.json": "deleted"}} in _json(["dvc", "status", "tune", "--json"], clone, env)["tune"]
    best = yaml.safe_load((clone / "tune/best_params.yaml").read_text())
    diff = _json(["dvc", "params", "diff", "--all", "--json"], clone, env)["tune/best_params.yaml"]
    assert diff["gan.l1_weight"]["new"] == best["gan"]["l1_weight"]
    shown = _json(["dvc", "exp", "show", "--json"], clone, env)
    workspace = next(row for row in shown if row["rev"] == "workspace")
    assert workspace["data"]["params"]["tune/best_params.yaml"]["data"]["gan"] == best["gan"]


def _json(cmd, cwd, env):
    """A command's JSON output (stdout only: DVC writes its warnings to stderr)."""
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)


STAGES = ("fetch", "shard", "init", "tune", "train", "baseline", "classifier", "evaluate")


def _ran(out: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in out]


def _stale(proj, env) -> list[str]:
    """Stages `dvc status` lists, but the init stage for being always_changed only."""
    return sorted(k for k, v in _json(["dvc", "status", "--json"], proj, env).items() if v != ["always changed"])


def _check_init_stage_follows_the_alias(proj, env):
    """train.init_from = models:/colorray@champion: the init stage writes the version the alias
    names now (dvc.lock holds the weights' hash); when a person moves the alias in the MLflow
    UI, the next `dvc repro init` writes the other weights and tune and train go stale."""
    import hashlib

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{proj / 'mlflow.db'}")
    versions = sorted(int(v.version) for v in client.search_model_versions("name='colorray'"))
    assert len(versions) >= 2  # every evaluated candidate is registered
    client.set_registered_model_alias("colorray", "champion", str(versions[0]))
    _set_param(proj, "train.init_from", "models:/colorray@champion")
    _sh(["dvc", "repro", "init"], proj, env)
    first = json.loads((proj / "models/init.json").read_text())
    assert first["version"] == versions[0] and first["model_id"] and first["kind"] == "generator"

    def locked() -> str:
        outs = yaml.safe_load((proj / "dvc.lock").read_text())["stages"]["init"]["outs"]
        return next(o["md5"] for o in outs if o["path"] == "models/init.pt")

    assert locked() == hashlib.md5((proj / "models/init.pt").read_bytes()).hexdigest()
    # tune and train start from models/init.pt; the baseline reads the train section (a param)
    assert _stale(proj, env) == ["baseline", "evaluate", "train", "tune"]
    client.set_registered_model_alias("colorray", "champion", str(versions[1]))  # the UI's alias move
    before = locked()
    _sh(["dvc", "repro", "init"], proj, env)
    assert json.loads((proj / "models/init.json").read_text())["version"] == versions[1] and locked() != before


def _check_tuned_values_are_params(proj, env, best):
    """tune/best_params.yaml is a params file of the stages that apply it: `dvc params diff`
    and `dvc exp show` list the values the sweep chose."""
    diff = _json(["dvc", "params", "diff", "--json"], proj, env)
    tuned = diff["tune/best_params.yaml"]
    assert {f"{s}.{k}" for s, values in best.items() for k in values} <= set(tuned)
    assert tuned["gan.l1_weight"]["new"] == best["gan"]["l1_weight"]
    shown = _json(["dvc", "exp", "show", "--json"], proj, env)
    workspace = next(row for row in shown if row["rev"] == "workspace")
    params = workspace["data"]["params"]["tune/best_params.yaml"]["data"]
    assert params["gan"]["l1_weight"] == best["gan"]["l1_weight"]


def _check_dvc_sees_defaults_and_code(proj, env):
    """A built-in default (colorray/defaults.yaml) is a param of exactly the stages that read
    its key, and a code change makes stale exactly the stages whose scripts import the file."""
    defaults = proj / "colorray/defaults.yaml"
    original = defaults.read_text()
    defaults.write_text(original.replace("  amp: auto\n", "  amp: none\n"))
    assert defaults.read_text() != original
    assert _stale(proj, env) == ["baseline", "train", "tune"]
    defaults.write_text(original.replace("  epochs: 2 ", "  epochs: 3 "))
    assert _stale(proj, env) == ["classifier"]
    defaults.write_text(original)
    code = proj / "colorray/real_classifier.py"
    source = code.read_text()
    code.write_text(source + "\n# a change\n")
    assert _stale(proj, env) == ["classifier", "evaluate"]
    code.write_text(source)
    assert _stale(proj, env) == []


def _check_evaluation(proj, out):
    """eval/ has the metrics of the GAN and both baselines; the evaluation run is linked to
    the training run; the champion alias exists exactly when the stage said it promoted."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    m = json.loads((proj / "eval/metrics.json").read_text())
    assert {"gray", "reconstruction", "gan"} <= m.keys() and m["gan"]["images"] == 64
    # The model the training started from (the shipped base) is a candidate too: it stays the
    # champion when fine-tuning on the demo photos made it worse.
    assert m["start"]["images"] == 64 and "start" in m["selection"]["tests"]
    assert all((proj / "eval" / f).stat().st_size > 1000 for f in ("samples.png", "diversity.png", "report.html"))
    client = MlflowClient(f"sqlite:///{proj / 'mlflow.db'}")
    train = _train_run(proj)
    eval_id = train.data.tags["colorray.evaluation_run_id"]
    assert client.get_run(eval_id).data.tags["colorray.train_run_id"] == train.info.run_id
    assert m["selection"]["reason"] in out  # the stage says whether it promoted, and why
    try:
        version = client.get_model_version_by_alias("colorray", "champion").version
    except MlflowException:
        version = None
    assert (version is not None) == m["selection"]["promoted"]


def _train_run(proj):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{proj / 'mlflow.db'}")
    exp = client.get_experiment_by_name("colorray")
    return client.search_runs([exp.experiment_id], filter_string="tags.`colorray.stage` = 'train'",
                              order_by=["attributes.start_time DESC"])[0]


def _check_mlflow(proj):
    """The MLflow store holds the run with metrics, sample grids and a model that loads."""
    import mlflow
    import numpy as np
    from mlflow import MlflowClient

    uri = f"sqlite:///{proj / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("colorray")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.`colorray.stage` = 'train'")
    assert run.data.metrics["iter"] == 4 and "val/colorfulness" in run.data.metrics
    assert run.data.metrics["val/images"] == VAL_IMAGES  # metrics.val_images
    assert [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    (model,) = [m for m in mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
                if m.source_run_id == run.info.run_id]
    # The logged model is the colorizer (models from code + the generator's weights file):
    # colorize reads its tensors, MLflow's loader runs colorray's code, nothing is unpickled.
    from colorray.colorize import load_model

    G, size = load_model(f"models:/{model.model_id}", tracking_uri=uri)
    assert size == 64 and G(torch.zeros(3, 1, 64, 128)).shape == (3, 2, 64, 128)  # another batch and size
    import base64
    import io

    import pandas as pd
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(buf, format="PNG")
    reply = mlflow.pyfunc.load_model(f"models:/{model.model_id}").predict(
        pd.DataFrame({"image": [base64.b64encode(buf.getvalue()).decode()]}))
    assert Image.open(io.BytesIO(base64.b64decode(reply["image"][0]))).size == (30, 20)


def test_dvc_exp_run_switches_to_tiny_imagenet_from_a_file_url(project, tmp_path):
    """`dvc exp run -S data.source=tiny-imagenet` with a file:// URL and its checksum: the fetch
    stage verifies and extracts the archive (Tiny-ImageNet's official layout, built here: 300
    photos; the real archive's 20,100 go through the same fetch and shard code in
    test_sources.py), and a tenth of its photos (a hash of each key picks them) is sharded.
    The switch is under test, not the decoding."""
    proj, env = project
    archive = tmp_path / "tiny-imagenet-200.zip"
    sha256 = tiny_imagenet_zip(archive, [f"n0{i}" for i in range(4)], per_class=50, val=100, size=(64, 64))
    _sh(["dvc", "exp", "run", "shard", "-S", "data.source=tiny-imagenet", "-S", f"data.url={archive.as_uri()}",
         "-S", f"data.sha256={sha256}", "-S", "data.subset_fraction=0.1"], proj, env)
    m = json.loads((proj / "data/shards/manifest.json").read_text())
    assert m["source"] == "tiny-imagenet" and m["labels"] == ["n00", "n01", "n02", "n03"]
    assert m["inputs"] == 300 and m["kept"] + len(m["dropped"]) + m["outside_subset"] == m["inputs"]
    assert 15 <= m["kept"] <= 45 and not m["dropped"]
    assert m["provenance"]["files"][0]["verified"] is True
    extracted = [f.relative_to(proj / "data/raw").parts for f in (proj / "data/raw").rglob("*.JPEG")]
    # every photo but the official test/ folder, which is never extracted
    assert len(extracted) == 300 and not any("test" in parts for parts in extracted)


def _leg_states(proj) -> dict:
    """Ray Tune's trial states in the first successive-halving leg (trials trained to iteration 4)."""
    import glob

    files = sorted(glob.glob(str(proj / "ray_results" / "sweep-*" / "leg-4" / "experiment_state-*.json")))
    if not files:
        return {}
    try:
        data = json.loads(Path(files[-1]).read_text())
    except ValueError:  # caught mid-write
        return {}
    return {json.loads(t[0])["trial_id"]: json.loads(t[0])["status"] for t in data["trial_data"]}


def _ctrl_c_during_tune(proj, env) -> tuple[str, dict]:
    """SIGINT to `dvc repro` (its process group, as Ctrl-C sends it) while the tune stage runs a
    successive-halving sweep, once one trial has reached the rung and the other is running: the
    stage exits non-zero without writing tune/, and `dvc status` still lists tune. Returns the
    output and what the sweep had done."""
    import glob
    import signal
    import time

    from colorray.sweep.run import STARTS

    for key, value in {"tune.enabled": True, "tune.num_samples": 2, "tune.iters": 8, "tune.report_every": 4,
                       "tune.grace_iters": 4, "tune.scheduler": "sha", "tune.reduction_factor": 2,
                       "tune.max_concurrent_trials": 1}.items():
        _set_param(proj, key, value)
    for f in ("best_params.yaml", "results.csv", "metric_vs_knobs.png"):
        (proj / "tune" / f).unlink(missing_ok=True)  # what a finished sweep would write
    _sh(["git", "commit", "-qam", "sha sweep"], proj, env)
    # A terminal's foreground job: SIGINT at its default (a background job of a script, as
    # pytest may be, inherits it ignored).
    proc = subprocess.Popen(["dvc", "repro"], cwd=proj, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # The moment the second trial starts (one trial at a time: the first has reached the
        # rung), by its own line in the sweep's record of trial starts, written before it does
        # anything else. (Tune's experiment state is saved on Tune's schedule: a short trial can
        # start and finish between two saves.)
        deadline = time.time() + 400
        while time.time() < deadline:
            starts = glob.glob(str(proj / "ray_results" / "sweep-*" / STARTS))
            if starts and len(Path(starts[0]).read_text().splitlines()) >= 2:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the sweep never got part-way: {_leg_states(proj)}")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, out[-3000:]
    assert "interrupted" in out and "Running stage 'train'" not in out, out[-3000:]
    assert not any((proj / "tune" / f).exists() for f in ("best_params.yaml", "results.csv", "metric_vs_knobs.png"))
    assert "tune" in _sh(["dvc", "status"], proj, env)
    before = _leg_states(proj)
    finished = {t for t, status in before.items() if status == "TERMINATED"}
    assert len(before) == 2 and len(finished) == 1  # one trial done, the other cut off mid-run
    starts = Path(glob.glob(str(proj / "ray_results" / "sweep-*" / STARTS))[0])
    return out, {"before": before, "finished": finished, "starts": starts,
                 "started_before": len(starts.read_text().splitlines())}


def _check_resumed_sweep(proj, out, interrupted):
    """The next `dvc repro` continued the sweep: it ran only the trial that was cut off, then
    continued the better of the two from its checkpoint at the rung, in the same MLflow runs."""
    import glob

    from mlflow import MlflowClient

    assert "continuing the interrupted sweep" in out
    assert "successive halving at iteration 4: 1 of 2 trials go on" in out
    with open(proj / "tune" / "results.csv") as f:
        rows = {row["trial_id"]: row for row in csv.DictReader(f)}
    assert set(rows) == set(interrupted["before"])
    client = MlflowClient(f"sqlite:///{proj / 'mlflow.db'}")
    at_rung = {t: {m.step: m.value for m in client.get_metric_history(row["mlflow_run_id"], "val/delta_cf")}
               for t, row in rows.items()}
    winner = min(rows, key=lambda t: at_rung[t][4])  # the better score at the rung goes on
    assert rows[winner]["outcome"] == "completed" and int(rows[winner]["iter"]) == 8
    # both legs in the trial's one MLflow run (step 0: the starting model's own val metrics)
    assert sorted(at_rung[winner]) == [0, 4, 8]
    loser = (set(rows) - {winner}).pop()
    assert rows[loser]["outcome"] == "stopped early" and int(rows[loser]["iters_run"]) == 4
    # After the restart: the trial that was cut off (once), then the winner's second leg.
    lines = interrupted["starts"].read_text().splitlines()
    rerun = [json.loads(line) for line in lines][interrupted["started_before"]:]
    assert [s["lineage"] for s in rerun] == sorted(set(rows) - interrupted["finished"]) + [winner]
    # The second leg continued from the rung's checkpoint: its workers started at iteration 4.
    leg2 = rerun[-1]["trial_id"]
    status = json.loads(Path(glob.glob(str(proj / "ray_results" / "sweep-*" / "train" / f"{leg2}-*" / "worker-0.json"))[0])
                        .read_text())
    assert status["started_at_iter"] == 4 and status["iter"] == 8
    exp = client.get_experiment_by_name("colorray").experiment_id
    parents = client.search_runs([exp], filter_string="tags.`colorray.stage` = 'tune'")
    assert len(parents) == 1  # the same sweep run continued
    children = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
