"""The sweep: Ray Tune over Ray Train trials, ranked on held-out val images, early-stopped by
ASHA or by synchronous successive halving (`_halving`), sampled by Optuna (TPE or random) or a
grid, recorded as nested MLflow runs, resumable.

Each trial (`run_trial`) runs the train stage's training loop (colorray.train.worker.run_loop)
with its knob values, so a trial's metrics have the train stage's names and the MLflow UI
compares them directly. A one-worker trial (tune.num_workers: 1) runs the loop in its own
process, as any Tune function trainable does, holding that worker's CPUs (and GPU) and reporting
with tune.report: no Ray Train controller and worker processes to start for each trial. A trial
of more workers is a small driver function that builds a `TorchTrainer` of them, with Ray Tune's
`TuneReportCallback` passing their reports to Tune (Ray Train V2: a Train run reports to Tune
through that callback, never by calling tune.report inside the workers); that driver holds no
CPU (`DRIVER_RESOURCES`).

The sweep folder `<ray.storage_path>/<sweep name>` holds Tune's state; the name is a hash of
the parameters and the code, so running the stage again after an interruption finds the
folder and continues it with `Tuner.restore` (finished trials are kept, the others run).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import yaml

from colorray.atomic import write_bytes_atomic, write_text_atomic
from colorray.config import (ConfigError, Params, StageInterrupted, TuneParams, flatten, parse_params,
                             run_digest)
from colorray.data.shards import read_manifest
from colorray.data.storage import location
from colorray.metrics.fid import fid_available, fid_cache_dir, unavailable_message
from colorray.metrics.registry import LOWER, better
from colorray.sweep.search import DistinctOptunaSearch
from colorray.sweep.space import Knob, OptunaSpace, grid_points, parse_space, trial_raw
from colorray import tracking
from colorray.redact import redact
from colorray.tracking import log_params, setup_mlflow
from colorray.train import init_from
from colorray.train.worker import init_ray, run_loop, torch_trainer, tune_session, worker_config

# A multi-worker trial's driver function only waits on its Train run: it holds no CPU (a whole one would
# idle, and even 0.01 CPU on a node makes that node too small for a worker that wants all of its
# CPUs: two trials deadlocked that way on a 2-node loopback cluster). The head node's built-in
# resource is what makes the bundle non-empty (Tune rejects {"CPU": 0} alone) and keeps the
# drivers on the head node, where Ray's own drivers run.
DRIVER_RESOURCES = {"CPU": 0, "node:__internal_head__": 0.001}
STARTS = "trial-starts.jsonl"  # one line per trial start, in the sweep folder (local storage)
SWEEP_RECORD = "sweep.json"  # out/: the MLflow sweep run this machine's store holds (not committed)
KNOB_PREFIX = "knob/"  # results.csv columns of the searched values
NOT_SAMPLED = ""  # a knob that does not apply to the trial's objective
MODE = "min"  # trials are ranked lowest score first (ranking_metric checks the metric agrees)


def ranking_metric(params: Params) -> str:
    """tune.metric, with auto = val/fid when the Inception weights are present, else val/delta_cf.
    The sweep ranks trials lowest first (MODE): the registry must say the metric is lower-is-better."""
    metric, weights = params.tune.metric, params.metrics.fid_weights
    if metric == "auto":
        metric = "val/fid" if fid_available(weights) else "val/delta_cf"
    if metric == "val/fid" and not fid_available(weights):
        raise ConfigError(f"tune.metric=val/fid: {unavailable_message(weights)}")
    if better(metric) != LOWER:
        raise ConfigError(f"tune.metric={metric}: the sweep ranks trials lowest first, and {metric} is "
                          f"{better(metric)}-is-better in colorray.metrics.registry")
    return metric


def sweep_name(params: Params, init_sha256: str = "") -> str:
    """sweep-<hash of the resolved parameters, the starting weights (train.init_from) and the
    colorray code>: the same sweep resumes, a changed one starts afresh."""
    return f"sweep-{run_digest(params, init_sha256.encode())[:12]}"


# ---- one trial ----------------------------------------------------------------------------------

def _child_run(client, static: dict, trial_id: str, params: Params) -> str:
    """This trial's MLflow run, nested under the sweep's; the same one when a restored sweep
    runs the trial again."""
    found = client.search_runs(
        [static["experiment_id"]],
        filter_string=f"tags.`mlflow.parentRunId` = '{static['parent_run_id']}' "
                      f"and tags.`colorray.trial_id` = '{trial_id}'")
    if found:
        return found[0].info.run_id
    run = client.create_run(static["experiment_id"],
                            run_name=tracking.run_name(f"trial {trial_id}", params, static["init_record"]),
                            tags={"mlflow.parentRunId": static["parent_run_id"], "colorray.stage": "tune-trial",
                                  "colorray.trial_id": trial_id, "colorray.sweep": static["name"],
                                  **init_from.lineage_tags(static["init_record"])})
    tracking.log_shards(static["shards"], "train", client=client, run_id=run.info.run_id)
    return run.info.run_id


def trial_knobs(config: dict) -> dict:
    """A trial's knob values: grid search nests them under "knobs", Optuna gives them flat, and a
    successive-halving leg under "leg"."""
    if "leg" in config:
        return dict(config["leg"]["knobs"])
    return dict(config["knobs"]) if "knobs" in config else dict(config)


def trial_lineage(config: dict, trial_id: str) -> str:
    """The trial a successive-halving leg continues (its MLflow run, its results.csv row)."""
    return config["leg"]["lineage"] if "leg" in config else trial_id


def trial_resources(sweep: TuneParams) -> dict:
    """What a trial holds while it runs: a one-worker trial trains in its own process and holds
    that worker's resources; a larger one's driver only waits on its workers (DRIVER_RESOURCES)."""
    if sweep.num_workers > 1:
        return DRIVER_RESOURCES
    return {"CPU": sweep.cpus_per_worker, **({"GPU": sweep.gpus_per_worker} if sweep.gpus_per_worker else {})}


def run_trial(config: dict, static: dict) -> None:
    """A Tune trial: a training run with this trial's knob values, in this process (one worker)
    or as a Ray Train run (more)."""
    import ray.tune
    from mlflow import MlflowClient
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    knobs, lineage = trial_knobs(config), trial_lineage(config, trial_id)
    if static["starts"]:
        with open(static["starts"], "a") as f:
            f.write(json.dumps({"trial_id": trial_id, "lineage": lineage, "time": time.time(),
                                "pid": os.getpid()}) + "\n")
    tune = TuneParams.model_validate(static["tune"])
    params = init_from.inherit(parse_params(trial_raw(static["base"], tune, knobs), origin=f"trial {lineage}"),
                               static["init_weights"])
    client = MlflowClient(static["tracking_uri"])
    run_id = _child_run(client, static, lineage, params)
    log_params(client, run_id, params)
    client.set_tag(run_id, "colorray.knobs", json.dumps(knobs, sort_keys=True))
    # Where the workers write their status (worker-<rank>.json): a new folder each time the
    # trial starts (for a Ray Train run, its name too).
    name = f"{trial_id}-{int(time.time())}"
    run_dir = Path(static["storage_dir"]) / name if static["storage_dir"] else Path(static["tmp"]) / name
    cfg = worker_config(params, static["shards"], run_id, static["tracking_uri"], run_dir,
                        fid_cache=static["fid_cache"], stop_at=static.get("stop_at"),
                        start_from=config["leg"]["checkpoint"] if "leg" in config else None,
                        init_weights=static["init_weights"])
    if params.ray.num_workers == 1:
        run_loop(cfg, tune_session())
    else:
        torch_trainer(params, cfg, name, static["train_storage"], callbacks=[TuneReportCallback()]).fit()
    client.set_terminated(run_id, "FINISHED")


def trial_dirname(trial) -> str:
    return f"trial-{trial.trial_id}"  # Tune's default repeats every knob value in the name


# ---- the sweep ----------------------------------------------------------------------------------

def _search(params: Params, knobs: dict[str, Knob], metric: str):
    """(search algorithm, param_space, num_samples) for tune.search."""
    from ray import tune as rt

    sweep = params.tune
    objective = params.gan.objective
    if sweep.search == "grid":
        return None, {"knobs": rt.grid_search(grid_points(knobs, objective))}, 1
    import optuna

    if sweep.search == "random":
        sampler = optuna.samplers.RandomSampler(seed=sweep.seed)
    else:  # TPE; its random start-up phase is a quarter of the trials (Optuna's 10 is a whole small sweep)
        sampler = optuna.samplers.TPESampler(seed=sweep.seed, n_startup_trials=max(2, sweep.num_samples // 4))
    search = DistinctOptunaSearch(OptunaSpace(knobs, objective), metric=metric, mode=MODE, sampler=sampler)
    return search, {}, sweep.num_samples


def _fit(storage: str, name: str, static: dict, params: Params, knobs: dict[str, Knob], metric: str, log,
         space: dict | None = None, ctrl_c: CtrlC | None = None):
    """Run (or continue, if an interrupted one is there) the Tune experiment <storage>/<name> of
    `run_trial`. Without space, tune.search samples the trials from tune.space; with one, every
    point of that grid is a trial. ASHA stops trials when tune.scheduler is asha."""
    from ray import tune as rt
    from ray.tune.schedulers import ASHAScheduler

    sweep = params.tune
    trainable = rt.with_resources(rt.with_parameters(run_trial, static=static), trial_resources(sweep))
    here = f"{storage.rstrip('/')}/{name}"
    search_alg, num_samples = None, 1
    if space is None:
        search_alg, space, num_samples = _search(params, knobs, metric)
    expected = num_samples * math.prod(len(v["grid_search"]) for v in space.values()
                                       if isinstance(v, dict) and "grid_search" in v)
    if rt.Tuner.can_restore(here):
        log(f"tune: continuing the interrupted sweep in {here}")
        grid = rt.Tuner.restore(here, trainable=trainable, resume_unfinished=True, resume_errored=True).fit()
        return check_finished(grid, expected, here, ctrl_c)
    scheduler = (ASHAScheduler(time_attr="iter", max_t=sweep.iters, grace_period=sweep.grace_iters,
                               reduction_factor=sweep.reduction_factor) if sweep.scheduler == "asha" else None)
    grid = rt.Tuner(trainable, param_space=space,
                    tune_config=rt.TuneConfig(metric=metric, mode=MODE, search_alg=search_alg,
                                              scheduler=scheduler, num_samples=num_samples,
                                              max_concurrent_trials=sweep.max_concurrent_trials,
                                              trial_dirname_creator=trial_dirname,
                                              # the next trial runs in a finished one's process:
                                              # no new process importing torch, Ray and MLflow
                                              reuse_actors=True),
                    run_config=rt.RunConfig(name=name, storage_path=storage, verbose=1,
                                            checkpoint_config=rt.CheckpointConfig(num_to_keep=2))).fit()
    return check_finished(grid, expected, here, ctrl_c)


class SweepInterrupted(StageInterrupted):
    """The sweep stopped before every trial ended (Ctrl-C, SIGINT): its state is saved for
    Tuner.restore, and no output may be written from it."""


class CtrlC:
    """Ctrl-C (SIGINT) during a sweep, noticed. Ray Tune answers SIGINT by saving its state and
    returning from fit() as if the sweep had ended, its stopped trials marked terminated: a
    half-run sweep would be written as finished. So Tune's own SIGINT handler is off
    (TUNE_DISABLE_SIGINT_HANDLER) and this one remembers the interrupt and passes it on as the
    SIGUSR1 that Tune handles the same way (save, return); a second Ctrl-C, or one outside
    Tune's fit, raises KeyboardInterrupt at once."""

    def __init__(self):
        self.interrupted = False

    def _handler(self, signum, frame):
        if self.interrupted or signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, signal.SIG_IGN, None):
            raise KeyboardInterrupt
        self.interrupted = True
        os.kill(os.getpid(), signal.SIGUSR1)

    def __enter__(self):
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def check_finished(grid, expected: int, path: str, ctrl_c: CtrlC | None = None):
    """`grid` if the sweep was not interrupted and every one of the `expected` trials ended
    (finished, stopped by the scheduler or failed); else SweepInterrupted."""
    ended = grid.num_terminated + grid.num_errors
    if (ctrl_c is not None and ctrl_c.interrupted) or len(grid) < expected or ended < len(grid):
        raise SweepInterrupted(
            f"the sweep in {path} was interrupted with {ended} of {expected} trials ended; its state is "
            "saved and no output was written. Run the stage again (dvc repro) to continue it.")
    return grid


def _parent_run(client, experiment_id: str, name: str, params: Params, metric: str, knobs: dict,
                init_record: dict) -> str:
    found = client.search_runs([experiment_id], filter_string=f"tags.`colorray.sweep` = '{name}' "
                                                                "and tags.`colorray.stage` = 'tune'")
    if found:
        return found[0].info.run_id
    trials = "grid" if params.tune.search == "grid" else f"{params.tune.num_samples} trials"
    title = f"tune {trials} of {', '.join(k.split('.')[-1] for k in knobs)} by {metric}"
    if init_record.get("init_from"):
        title += " from " + tracking.run_name("", params, init_record).split(" from ", 1)[-1]
    run = client.create_run(experiment_id, run_name=title,
                            tags={"colorray.stage": "tune", "colorray.sweep": name, "colorray.metric": metric,
                                  **init_from.lineage_tags(init_record)})
    from mlflow.entities import Param

    items = [Param(k, str(v)) for k, v in flatten({"tune": params.tune.model_dump(mode="json")}).items()]
    client.log_batch(run.info.run_id, params=items)
    return run.info.run_id


def _outcome(metrics: dict, error, iters: int) -> str:
    if error is not None:
        return "error"
    return "completed" if metrics.get("iter", 0) >= iters else "stopped early"


def _result_id(r) -> str:
    """A Tune result's trial id (a leg of successive halving: the trial it continues)."""
    own = (r.metrics or {}).get("trial_id") or Path(r.path).name.removeprefix("trial-")  # no report: trial_dirname
    return trial_lineage(r.config or {}, own)


def _rows(results, knobs: dict[str, Knob], metric: str, iters: int, runs: dict) -> list[dict]:
    rows = []
    for r in results:
        m = r.metrics or {}
        knob_values = trial_knobs(r.config or {})
        trial_id = _result_id(r)
        row = {"trial_id": trial_id, "outcome": _outcome(m, r.error, iters), "iter": m.get("iter", 0),
               "ranked_by": metric, "score": m.get(metric)}
        for key in ("val/fid", "val/delta_cf", "val/l1", "val/colorfulness", "val/colorfulness_true"):
            if key in m:
                row[key] = m[key]
        for key in knobs:
            row[KNOB_PREFIX + key] = knob_values.get(key, NOT_SAMPLED)
        row["mlflow_run_id"] = runs.get(trial_id, "")
        # The trial's last checkpoint: Tune's own (a one-worker trial), or its Train run's
        # (TuneReportCallback passes that path as a metric).
        row["checkpoint"] = m.get("checkpoint_path") or (r.checkpoint.path if r.checkpoint else "")
        rows.append(row)
    return sorted(rows, key=lambda row: row["trial_id"])


def rungs(sweep: TuneParams) -> list[int]:
    """Where successive halving ranks the trials: tune.grace_iters x tune.reduction_factor^k below
    tune.iters (the rungs of ASHA), then tune.iters."""
    out, r = [], float(sweep.grace_iters)
    while round(r) < sweep.iters:
        out.append(round(r))
        r *= sweep.reduction_factor
    return out + [sweep.iters]


def promoted(rows: list[dict], reduction_factor: float) -> list[dict]:
    """Successive halving's cut at a rung: the best max(1, floor(n / reduction_factor)) of the n
    trials that reached it with a score and a checkpoint (lower is better; ties by trial id)."""
    scored = sorted((r for r in rows if r["outcome"] != "error" and r["score"] is not None and r["checkpoint"]),
                    key=lambda r: (r["score"], r["trial_id"]))
    return scored[:max(1, int(len(scored) // reduction_factor))]


def _halving(fit, path: str, static: dict, sweep: TuneParams, rows_of, log) -> list[dict]:
    """Synchronous successive halving (tune.scheduler: sha): every trial trains to the first rung;
    only when all of them are there do the best 1/reduction_factor continue, each from its own
    checkpoint, to the next rung, and so on to tune.iters. Unlike asynchronous ASHA, no trial goes
    on for lack of others to compare with. Each leg is a Tune experiment <sweep>/leg-<iters>
    (resumable like the rest); a trial's legs share its MLflow run and its results.csv row."""
    from ray import tune as rt

    rows: dict[str, dict] = {}
    going_on: list[dict] = []
    knobs: dict[str, dict] = {}
    for stop_at in rungs(sweep):
        static_leg = {**static, "stop_at": stop_at}
        if not rows:  # the first leg: the trials tune.search samples
            results = fit(path, f"leg-{stop_at}", static_leg)
        else:  # later legs: a grid over the trials that go on
            legs = [{"lineage": r["trial_id"], "knobs": knobs[r["trial_id"]], "checkpoint": r["checkpoint"]}
                    for r in going_on]
            results = fit(path, f"leg-{stop_at}", static_leg, {"leg": rt.grid_search(legs)})
        knobs.update({_result_id(r): trial_knobs(r.config or {}) for r in results})
        leg_rows = rows_of(results)
        rows.update({r["trial_id"]: r for r in leg_rows})
        if stop_at < sweep.iters:
            going_on = promoted(leg_rows, sweep.reduction_factor)
            log(f"tune: successive halving at iteration {stop_at}: {len(going_on)} of {len(leg_rows)} trials go on")
            if not going_on:  # every trial failed: nothing to continue
                break
    return sorted(rows.values(), key=lambda r: r["trial_id"])


def _best(rows: list[dict]) -> dict:
    """The lowest score among the trials that ran longest (ASHA let them finish for being good;
    an early score is not comparable with a late one)."""
    scored = [r for r in rows if r["outcome"] != "error" and r["score"] is not None]
    if not scored:
        raise RuntimeError("no trial reported the ranking metric; see the errors in the sweep folder")
    longest = max(r["iter"] for r in scored)
    return min((r for r in scored if r["iter"] == longest), key=lambda r: r["score"])


def _write_csv(rows: list[dict], path: Path) -> None:
    # "/" not "." in column names: Vega-Lite (dvc plots) reads a dot as a nested field.
    fields = list(dict.fromkeys(k for r in rows for k in r))
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=[k.replace(".", "/") for k in fields])
    w.writeheader()
    for r in rows:
        w.writerow({k.replace(".", "/"): "null" if v is None else v for k, v in r.items()})
    write_text_atomic(path, text.getvalue())


def _plot(rows: list[dict], knobs: dict[str, Knob], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    keys = list(knobs) or ["(no knobs)"]
    cols = min(3, len(keys))
    nrows = -(-len(keys) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        knob = knobs.get(key)
        for outcome, filled in (("completed", True), ("stopped early", False)):
            pts = [(r.get(KNOB_PREFIX + key, NOT_SAMPLED), r["score"]) for r in rows
                   if r["outcome"] == outcome and r.get(KNOB_PREFIX + key, NOT_SAMPLED) != NOT_SAMPLED
                   and r["score"] is not None]
            if pts:  # choices at their position in the list, ranges on their own scale
                xs = [knob.args.index(x) if knob.dist == "choice" else x for x, _ in pts]
                ax.scatter(xs, [y for _, y in pts], edgecolors="C0", facecolors="C0" if filled else "none",
                           label=outcome)
        if knob is not None and knob.dist == "choice":
            ax.set_xticks(range(len(knob.args)), ["null" if v is None else str(v) for v in knob.args])
        if knob is not None and knob.dist == "loguniform":
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"{metric} (lower is better) of each trial at its last report")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    write_bytes_atomic(path, png.getvalue())


def _best_yaml(best: dict, knobs: dict[str, Knob], name: str, parent: str) -> str:
    nested: dict = {}
    for key in knobs:
        if best[KNOB_PREFIX + key] != NOT_SAMPLED:
            section, field = key.split(".")
            nested.setdefault(section, {})[field] = best[KNOB_PREFIX + key]
    head = (f"# Written by the tune stage ({name}): the best trial by {best['ranked_by']} (lower is better).\n"
            f"# Trial {best['trial_id']}: {best['ranked_by']} {best['score']:.6g} after {best['iter']} iterations; "
            f"MLflow run {best['mlflow_run_id']} (sweep run {parent}).\n"
            f"# The train stage applies these values over params.yaml.\n")
    return head + (yaml.safe_dump(nested, sort_keys=True) if nested else "{}\n")


def disabled(out: Path) -> dict:
    """tune.enabled: false: no search; empty outputs so the train stage uses params.yaml."""
    write_text_atomic(out / "best_params.yaml",
                      "# tune.enabled is false: no search was run; the train stage uses params.yaml as it is.\n{}\n")
    write_text_atomic(out / "results.csv", "trial_id,outcome,iter,ranked_by,score\n")
    _plot([], {}, "no sweep", out / "metric_vs_knobs.png")
    write_text_atomic(out / SWEEP_RECORD, json.dumps({"enabled": False}, indent=2) + "\n")
    return {"enabled": False}


def run_sweep(base: dict, params: Params, shards: str | Path, root: Path, out: Path, log=print,
              init: Path | None = None) -> dict:
    """Run (or continue) the sweep of tune.space and write out/best_params.yaml,
    out/results.csv and out/metric_vs_knobs.png; returns a summary. init: the init stage's
    models/init.pt, which every trial starts from (train.init_from)."""
    from mlflow import MlflowClient
    from ray import tune as rt

    out.mkdir(parents=True, exist_ok=True)
    if not params.tune.enabled:
        return disabled(out)
    sweep = params.tune
    shards, root = location(shards), Path(root).resolve()
    knobs = parse_space(base, sweep, read_manifest(shards)["splits"]["train"]["count"])
    metric = ranking_metric(params)
    tracking_uri, experiment_id = setup_mlflow(root)
    client = MlflowClient(tracking_uri)
    storage = params.ray.storage_path or str(root / "ray_results")
    init_weights, init_record = init_from.prepare(params.train.init_from, init, root / "ray_results" / "init-tune",
                                                  tracking_uri)
    name = sweep_name(params, init_record["sha256"] if init_weights else "")
    local = "://" not in storage
    path = f"{storage.rstrip('/')}/{name}"
    if local:
        Path(path).mkdir(parents=True, exist_ok=True)
    parent = _parent_run(client, experiment_id, name, params, metric, knobs, init_record)
    client.update_run(parent, status="RUNNING")
    static = {"base": base, "tune": sweep.model_dump(mode="json"), "shards": str(shards),
              "tracking_uri": tracking_uri, "experiment_id": experiment_id, "parent_run_id": parent,
              "name": name, "train_storage": f"{path}/train", "storage_dir": f"{path}/train" if local else None,
              "tmp": tempfile.gettempdir(), "starts": f"{path}/{STARTS}" if local else None,
              "fid_cache": fid_cache_dir(params, root) if metric == "val/fid" else None,
              "init_weights": str(init_weights) if init_weights else None, "init_record": init_record}

    init_ray()

    def runs() -> dict:
        return {r.data.tags.get("colorray.trial_id"): r for r in client.search_runs(
            [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")}

    def fit(storage: str, name: str, static: dict, space: dict | None = None):
        return _fit(storage, name, static, params, knobs, metric, log, space, ctrl_c)

    def rows_of(results) -> list[dict]:
        return _rows(results, knobs, metric, sweep.iters, {k: r.info.run_id for k, r in runs().items()})

    with CtrlC() as ctrl_c:
        if sweep.scheduler == "sha":
            restored = rt.Tuner.can_restore(f"{path}/leg-{rungs(sweep)[0]}")
            rows = _halving(fit, path, static, sweep, rows_of, log)
        else:
            restored = rt.Tuner.can_restore(path)
            rows = rows_of(fit(storage, name, static))
    children = runs()
    for row in rows:
        # A stopped trial trains on until Tune's stop reaches it: count what it did.
        child = children.get(row["trial_id"])
        row["iters_run"] = int(max(row["iter"], child.data.metrics.get("iter", 0) if child else 0))
        if child:  # trials that ASHA stopped never ended their MLflow run themselves
            client.set_tag(row["mlflow_run_id"], "colorray.outcome", row["outcome"])
            if row["checkpoint"]:
                client.set_tag(row["mlflow_run_id"], "colorray.checkpoint", row["checkpoint"])
            client.set_terminated(row["mlflow_run_id"], "FAILED" if row["outcome"] == "error" else "FINISHED")
    best = _best(rows)
    write_text_atomic(out / "best_params.yaml", _best_yaml(best, knobs, name, parent))
    _write_csv(rows, out / "results.csv")
    _plot(rows, knobs, metric, out / "metric_vs_knobs.png")
    counts = {o: sum(r["outcome"] == o for r in rows) for o in ("completed", "stopped early", "error")}
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(parent, metrics=[Metric(f"best/{metric}", float(best["score"]), now, 0),
                                      Metric("trials/completed", counts["completed"], now, 0),
                                      Metric("trials/stopped_early", counts["stopped early"], now, 0),
                                      Metric("trials/error", counts["error"], now, 0)])
    client.set_tag(parent, "colorray.best_run_id", best["mlflow_run_id"])
    for f in ("best_params.yaml", "results.csv", "metric_vs_knobs.png"):
        client.log_artifact(parent, str(out / f), artifact_path="tune")
    client.set_terminated(parent, "FINISHED")
    # Where this machine's record of the sweep is: the one output that is not committed, so a
    # fresh clone (whose MLflow store has no sweep) runs the stage instead of skipping it.
    write_text_atomic(out / SWEEP_RECORD, json.dumps(
        {"sweep": name, "tracking_uri": redact(tracking_uri), "parent_run_id": parent,
         "trial_run_ids": sorted(r["mlflow_run_id"] for r in rows if r.get("mlflow_run_id"))}, indent=2) + "\n")
    trial_steps = sum(r["iters_run"] for r in rows)
    return {"name": name, "path": path, "restored": restored, "metric": metric, "best": best,
            "scheduler": {"asha": "ASHA", "sha": "successive halving"}.get(sweep.scheduler, "no scheduler"),
            "trials": len(rows), **counts, "trial_iters": trial_steps, "parent_run_id": parent, "rows": rows}
