"""The search space of `tune.space` in params.yaml: parsing, checking, and sampling.

A knob is a dotted parameter key with one distribution:

    gan.l1_weight: {loguniform: [10, 300]}
    gan.n_critic: {randint: [1, 5]}          # both ends included
    train.batch_size: {choice: [8, 16, 32]}

Every value a knob can take (each choice, both ends of a range) is checked against the same
rules as params.yaml, in a trial's full configuration, before any trial starts; so is every
batch size against every dataset subset. Knobs that only mean something for some objectives
(`ONLY_FOR`: the weight clip of WGAN, ...) are not sampled for trials of other objectives.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

from colorray.config import ConfigError, Params, TuneParams, parse_params

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
# Knobs that exist for some objectives only: a trial of another objective does not sample them.
ONLY_FOR = {"gan.clip": ("wgan",), "gan.ebgan_margin": ("ebgan",), "gan.label_smoothing": ("vanilla",)}
# What a trial may not vary: its budget and bookkeeping come from the tune section, and other
# data keys would need other shards (data.dataset_size picks a subset of the same shards).
NOT_SEARCHABLE = {"train.iters", "train.resume", "train.checkpoint_every"}
SEARCHABLE_SECTIONS = ("model", "gan", "train", "loader")


@dataclass(frozen=True)
class Knob:
    key: str  # dotted parameter key, e.g. "gan.l1_weight"
    dist: str  # one of DISTRIBUTIONS
    args: tuple  # choice: the values; uniform / loguniform / randint: (low, high)

    def candidates(self) -> tuple:
        """The values that bound what this knob can produce (checked before the sweep)."""
        return self.args

    def grid(self) -> list:
        if self.dist == "choice":
            return list(self.args)
        if self.dist == "randint":
            return list(range(self.args[0], self.args[1] + 1))
        raise ConfigError(f"tune.space.{self.key}: grid search needs choice or randint values "
                          f"(a {self.dist} range has no grid)")

    def applies_to(self, objective: str) -> bool:
        return objective in ONLY_FOR.get(self.key, (objective,))


def set_dotted(raw: dict, key: str, value: Any) -> None:
    section, name = key.split(".", 1)
    if not isinstance(raw.get(section), dict):
        raw[section] = {}
    raw[section][name] = value


def trial_raw(base: dict, tune: TuneParams, overrides: dict) -> dict:
    """A trial's params: params.yaml with the knobs' values, the trial budget and resources
    of the tune section, and a report (with val metrics) every tune.report_every iterations."""
    raw = copy.deepcopy(base or {})
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    set_dotted(raw, "train.iters", tune.iters)
    set_dotted(raw, "train.checkpoint_every", tune.iters)  # the final state only
    set_dotted(raw, "train.resume", False)
    for key, value in {"num_workers": tune.num_workers, "cpus_per_worker": tune.cpus_per_worker,
                       "use_gpu": tune.gpus_per_worker > 0, "gpus_per_worker": tune.gpus_per_worker or 1.0,
                       "report_every": tune.report_every, "eval_every": tune.report_every,
                       "max_failures": 0}.items():
        set_dotted(raw, f"ray.{key}", value)
    return raw


def _parse_knob(key: str, spec: Any) -> Knob:
    where = f"tune.space.{key}"
    if not isinstance(key, str) or key.count(".") != 1:
        raise ConfigError(f"{where}: a knob is a dotted parameter key such as gan.l1_weight")
    section, name = key.split(".")
    fields = Params.model_fields
    if key == "data.dataset_size":
        pass
    elif section not in SEARCHABLE_SECTIONS:
        raise ConfigError(f"{where}: only {', '.join(SEARCHABLE_SECTIONS)} keys and data.dataset_size "
                          f"can be searched (other data keys need other shards; ray and tune set up the sweep)")
    elif name not in fields[section].annotation.model_fields:
        allowed = ", ".join(fields[section].annotation.model_fields)
        raise ConfigError(f"{where}: unknown parameter {key} (keys of {section}: {allowed})")
    elif key in NOT_SEARCHABLE:
        raise ConfigError(f"{where}: {key} is set by the tune section for every trial, not searched")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}: expected one distribution, e.g. {{choice: [1, 2]}} or "
                          f"{{loguniform: [1e-4, 1e-2]}} (got {spec!r})")
    (dist, args), = spec.items()
    if dist not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {dist!r} (use one of {', '.join(DISTRIBUTIONS)})")
    if not isinstance(args, (list, tuple)) or not args:
        raise ConfigError(f"{where}.{dist}: expected a list of values (got {args!r})")
    if dist == "choice":
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in args):
            raise ConfigError(f"{where}.choice: values must be numbers, strings, booleans or null (got {list(args)!r})")
        if len(set(map(repr, args))) != len(args):
            raise ConfigError(f"{where}.choice: repeated values in {list(args)!r}")
        return Knob(key, dist, tuple(args))
    if len(args) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in args):
        raise ConfigError(f"{where}.{dist}: expected [low, high] numbers (got {list(args)!r})")
    low, high = args
    if not low < high:
        raise ConfigError(f"{where}.{dist}: low must be below high (got [{low}, {high}])")
    if dist == "loguniform" and low <= 0:
        raise ConfigError(f"{where}.loguniform: both ends must be positive (got [{low}, {high}])")
    if dist == "randint" and not all(isinstance(v, int) for v in args):
        raise ConfigError(f"{where}.randint: expected integers (got [{low}, {high}])")
    return Knob(key, dist, (low, high))


def parse_space(base: dict, tune: TuneParams, train_count: int | None = None) -> dict[str, Knob]:
    """The knobs of tune.space, every value they can take checked in a trial's configuration.
    `train_count` (the training split's size, when the shards exist) bounds the batch size."""
    knobs = {key: _parse_knob(key, spec) for key, spec in tune.space.items()}
    if tune.search == "grid":
        for knob in knobs.values():
            knob.grid()
    base_params = parse_params(trial_raw(base, tune, {}), origin="params.yaml (as a trial)")
    objective = knobs.get("gan.objective")
    objectives = objective.args if objective else (base_params.gan.objective,)
    for knob in knobs.values():
        users = [o for o in objectives if knob.applies_to(o)]
        if not users:
            raise ConfigError(f"tune.space.{knob.key}: only used by gan.objective "
                              f"{' or '.join(ONLY_FOR[knob.key])}, and no trial has it "
                              f"(trials use {', '.join(map(str, objectives))})")
        for value in knob.candidates():
            over = {knob.key: value}
            if knob.key != "gan.objective" and objective:
                over["gan.objective"] = users[0]
            _check_trial(base, tune, over, knob.key)
    _check_combinations(base, tune, knobs, objectives)
    _check_batches(knobs, base_params, train_count)
    return knobs


def _check_trial(base: dict, tune: TuneParams, over: dict, key: str | None = None) -> None:
    """Parse a trial's params; a refusal names the knob (`key`, else the first knob the
    message mentions) and the other values it was combined with."""
    try:
        parse_params(trial_raw(base, tune, over), origin="trial")
    except ConfigError as e:
        detail = str(e).removeprefix("trial: ").removeprefix("invalid parameters:\n  ")
        key = key or next((k for k in over if k in detail), next(iter(over)))
        others = ", ".join(f"{k}={v!r}" for k, v in over.items() if k != key)
        raise ConfigError(f"tune.space.{key}: the value {over[key]!r} is refused"
                          f"{' with ' + others if others else ''}: {detail}") from None


MAX_COMBINATIONS = 4096  # checked exhaustively up to this many per objective


def _check_combinations(base: dict, tune: TuneParams, knobs: dict[str, Knob], objectives) -> None:
    """Knobs fine alone can clash (BatchNorm in the critic and a gradient-penalty objective):
    every combination of the values that bound them is a trial's configuration to check."""
    for objective in objectives:
        own = [k for k in knobs.values() if k.key != "gan.objective" and k.applies_to(objective)]
        combos = itertools.product(*(k.candidates() for k in own))
        for values in itertools.islice(combos, MAX_COMBINATIONS):
            over = {"gan.objective": objective} if "gan.objective" in knobs else {}
            over.update({k.key: v for k, v in zip(own, values)})
            if over:
                _check_trial(base, tune, over)


def _values(knobs: dict[str, Knob], key: str, default: Any) -> tuple[tuple, str]:
    if key in knobs:
        return knobs[key].candidates(), f"tune.space.{key}"
    return (default,), key


def _check_batches(knobs: dict[str, Knob], base: Params, train_count: int | None) -> None:
    batches, batch_where = _values(knobs, "train.batch_size", base.train.batch_size)
    sizes, size_where = _values(knobs, "data.dataset_size", base.data.dataset_size)
    limits = [(s, f"{size_where}={s}") for s in sizes if s is not None]
    if train_count is not None:
        limits.append((train_count, f"the training split's {train_count} images"))
    for batch in batches:
        for limit, what in limits:
            if batch > limit:
                raise ConfigError(f"{batch_where}: batch size {batch} is larger than the dataset subset "
                                  f"({what}): a trial with both would have no full batch")


# ---- sampling -----------------------------------------------------------------------------------

def _objectives(knobs: dict[str, Knob], default: str):
    return knobs["gan.objective"].args if "gan.objective" in knobs else (default,)


class OptunaSpace:
    """A define-by-run space for Ray Tune's OptunaSearch (TPE or random sampler): the objective
    is drawn first, then only the knobs that apply to it. A class, not a closure: Tune pickles
    the searcher with the sweep's state so that an interrupted sweep can be restored."""

    def __init__(self, knobs: dict[str, Knob], default_objective: str):
        self.knobs, self.default_objective = knobs, default_objective

    def __call__(self, trial) -> None:
        objective = self.default_objective
        if "gan.objective" in self.knobs:
            objective = trial.suggest_categorical("gan.objective", list(self.knobs["gan.objective"].args))
        for key, k in self.knobs.items():
            if key == "gan.objective" or not k.applies_to(objective):
                continue
            if k.dist == "choice":
                trial.suggest_categorical(key, list(k.args))
            elif k.dist == "randint":
                trial.suggest_int(key, k.args[0], k.args[1])
            else:
                trial.suggest_float(key, k.args[0], k.args[1], log=k.dist == "loguniform")
        return None


def grid_points(knobs: dict[str, Knob], default_objective: str) -> list[dict]:
    """Every combination of the knobs' grid values, each objective with its own knobs only."""
    points = []
    for objective in _objectives(knobs, default_objective):
        own = [k for key, k in knobs.items() if key != "gan.objective" and k.applies_to(objective)]
        for values in itertools.product(*(k.grid() for k in own)):
            point = {k.key: v for k, v in zip(own, values)}
            if "gan.objective" in knobs:
                point = {"gan.objective": objective, **point}
            points.append(point)
    return points
