"""Replay the efficiency benchmark's searches on the grid's recorded curves, for many TPE seeds.

    python benchmarks/tune_replay.py --out /tmp/teff32 [--seeds 40] [--samples 8] [--startup 75]

`benchmarks/tune_efficiency.py` runs each search for real, one TPE seed at a time (minutes per
seed on 2 cores). This replays ASHA + TPE and SHA + TPE over the same space for --seeds TPE
seeds in seconds, using the val metric that each grid trial reported at every rung (read from
the benchmark's MLflow store in --out). That is a faithful stand-in because CPU training here is
deterministic and a trial's curve depends only on its configuration: in the real runs, every
search trial reported exactly the value its grid point had (docs/benchmarks.md).

What the replay has to model is time, which decides the order in which trials reach a rung
(ASHA compares a trial only with those before it; TPE learns from trials as they end): two
trials at a time, each start of a trial or leg costs --startup iterations' worth of time (a
Ray Train start is about a quarter of a 300-iteration trial here), and an iteration costs
(1 + n_critic) / 2. Compute (trial-steps) is counted as in the benchmark. The replay is not a
measurement: it tells how often a seed like the measured ones meets the target, and it
reproduces the measured ASHA runs (seeds 0 and 1: same winners, same trial-steps).
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import statistics
from pathlib import Path

import numpy as np
import optuna
from tune_efficiency import SPACE

from colorray.config import TuneParams, parse_params
from colorray.sweep.run import _search, rungs
from colorray.sweep.space import parse_space

KNOBS = ("gan.l1_weight", "gan.clip", "gan.n_critic")  # tune_efficiency.SPACE, the searched part
SLOTS = 2  # tune.max_concurrent_trials in the benchmark


def load(root: Path) -> tuple[dict, dict]:
    """(curves: knob values -> {iteration: metric}, the benchmark's result)."""
    from mlflow import MlflowClient

    result = json.loads(next(root.glob("tune_efficiency*.json")).read_text())
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    with open(root / "grid" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    curves = {}
    for r in rows:
        point = tuple(float(r["knob/" + k.replace(".", "/")]) for k in KNOBS)
        curves[point] = {m.step: m.value for m in client.get_metric_history(r["mlflow_run_id"], result["metric"])}
    return curves, result


class Tpe:
    """The tune stage's own searcher (`colorray.sweep.run._search`: Optuna TPE, a quarter of the
    trials random, no repeated configurations) over the benchmark's space, by knob values."""

    def __init__(self, seed: int, samples: int):
        raw = {"tune": {"num_samples": samples, "seed": seed, "space": SPACE}}
        params = parse_params(raw)
        self.search, _, _ = _search(params, parse_space(raw, params.tune, 1 << 30), "score")
        self.ids: dict[tuple, str] = {}

    def suggest(self) -> tuple:
        trial_id = str(len(self.ids))
        config = self.search.suggest(trial_id)
        point = tuple(float(config[k]) for k in KNOBS)
        self.ids[point] = trial_id
        return point

    def tell(self, point: tuple, value: float) -> None:
        self.search.on_trial_complete(self.ids[point], {"score": value})


def run_leg(starts: list, curves: dict, until: int, startup: float, on_report, next_trial) -> None:
    """Two slots; starts = [(point, from_iter)] to run first, then next_trial() until it gives None.
    on_report(point, iteration, value) -> False stops the trial there."""
    clock, events, running, queue = 0.0, [], 0, list(starts)

    def start():
        nonlocal running
        item = queue.pop(0) if queue else next_trial()
        if item is None:
            return False
        point, begin = item
        cost = (1 + point[2]) / 2
        for it in sorted(s for s in curves[point] if begin < s <= until):
            heapq.heappush(events, (clock + startup + (it - begin) * cost, it, point))
        running += 1
        return True

    while running < SLOTS and start():
        pass
    while events:
        clock, it, point = heapq.heappop(events)
        go_on = on_report(point, it, curves[point][it])
        if go_on and it < until:
            continue
        if not go_on:
            events = [e for e in events if e[2] != point]
            heapq.heapify(events)
        running -= 1
        while running < SLOTS and start():
            pass


def asha(seed: int, a, curves: dict) -> tuple[float, int]:
    tpe, recorded, last, n = Tpe(seed, a.samples), {r: [] for r in a.rungs[:-1]}, {}, [0]

    def on_report(point, it, value):
        last[point] = (it, value)
        if it in recorded:  # Ray's ASHA (mode min): stop if worse than the 1/rf quantile of earlier ones
            cut = np.nanpercentile(recorded[it], 100 / a.rf) if recorded[it] else None
            recorded[it].append(value)
            if cut is not None and value > cut:
                tpe.tell(point, value)
                return False
        if it == a.rungs[-1]:
            tpe.tell(point, value)
        return True

    def next_trial():
        if n[0] == a.samples:
            return None
        n[0] += 1
        return tpe.suggest(), 0

    run_leg([], curves, a.rungs[-1], a.startup, on_report, next_trial)
    return outcome(last)


def sha(seed: int, a, curves: dict) -> tuple[float, int]:
    tpe, last, n = Tpe(seed, a.samples), {}, [0]
    going_on: list = []
    for k, until in enumerate(a.rungs):
        at_rung = {}

        def on_report(point, it, value):
            last[point] = (it, value)
            if it == until:
                at_rung[point] = value
                if k == 0:
                    tpe.tell(point, value)  # a first-leg trial ends at the rung
            return True

        def next_trial():
            if k > 0 or n[0] == a.samples:
                return None
            n[0] += 1
            return tpe.suggest(), 0

        run_leg([(p, a.rungs[k - 1]) for p in going_on] if k else [], curves, until, a.startup, on_report, next_trial)
        going_on = sorted(at_rung, key=at_rung.get)[:max(1, int(len(at_rung) // a.rf))]
    return outcome(last)


def outcome(last: dict) -> tuple[float, int]:
    """(the best score among the trials that ran longest, trial-steps)."""
    longest = max(it for it, _ in last.values())
    return min(v for it, v in last.values() if it == longest), sum(it for it, _ in last.values())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="a tune_efficiency.py --out folder (its grid and MLflow store)")
    ap.add_argument("--seeds", type=int, default=40, help="TPE seeds 0..N-1")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--rf", type=float, default=3.0, help="reduction factor (the benchmark's: 3)")
    ap.add_argument("--startup", type=float, default=75.0, help="a trial start's cost, in iterations")
    a = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    curves, result = load(Path(a.out))
    iters = result["iters_per_trial"]
    # The benchmark's rungs: grace period iters // 6.
    a.rungs = rungs(TuneParams(iters=iters, grace_iters=max(1, iters // 6), reduction_factor=a.rf))
    grid_best, noise = result["grid"]["best"], result["noise"]["std"]
    grid_steps = result["grid"]["trial_steps"]
    print(f"{len(curves)} grid points, rungs {a.rungs}, grid best {grid_best:.2f}, noise std {noise:.2f}; "
          f"TPE seeds 0-{a.seeds - 1}, {a.samples} trials, {SLOTS} at a time\n")
    print("| search | seeds within 1 noise std of the grid's best | trial-steps: mean (max) | seeds meeting the target (both) | seeds 0, 1: best (trial-steps) |")
    print("|---|---|---|---|---|")
    for name, search in (("ASHA + TPE", asha), ("SHA + TPE", sha)):
        runs = [search(seed, a, curves) for seed in range(a.seeds)]
        good = [best <= grid_best + noise for best, _ in runs]
        cheap = [steps <= 0.35 * grid_steps for _, steps in runs]
        steps = [s for _, s in runs]
        print(f"| {name} | {sum(good)} of {a.seeds} | {statistics.mean(steps):.0f} ({max(steps)}) = "
              f"{100 * statistics.mean(steps) / grid_steps:.0f}% ({100 * max(steps) / grid_steps:.0f}%) | "
              f"{sum(g and c for g, c in zip(good, cheap))} of {a.seeds} | "
              f"{', '.join(f'{b:.2f} ({s})' for b, s in runs[:2])} |")


if __name__ == "__main__":
    main()
