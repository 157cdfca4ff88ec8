"""The sweep's search space: every impossible knob is refused (naming it) before Ray starts;
conditional knobs; grid and Optuna sampling; tuned values applied over params.yaml."""
import pytest
import yaml

from colorray.config import ConfigError, TuneParams, load_params
from colorray.sweep.space import OptunaSpace, grid_points, parse_space, trial_raw
from conftest import ROOT

DEFAULT_SPACE = yaml.safe_load((ROOT / "params.yaml").read_text())["tune"]["space"]


def _tune(space, **kw) -> TuneParams:
    return TuneParams(space=space, **kw)


def _refused(space, base=None, train_count=None, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        parse_space(base or {}, _tune(space, **kw), train_count)
    return str(e.value)


def test_the_default_space_covers_the_five_knobs_and_parses():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    knobs = parse_space(base, load_params(ROOT / "params.yaml").tune, train_count=3538)
    assert {"gan.l1_weight", "gan.clip", "gan.n_critic", "train.batch_size", "data.dataset_size"} <= set(knobs)


@pytest.mark.parametrize("space, key, words", [
    ({"gan.clip": {"choice": [-0.01, 0.01]}, "gan.objective": {"choice": ["wgan"]}}, "tune.space.gan.clip", "-0.01"),
    ({"gan.clip": {"uniform": [-0.05, 0.05]}, "gan.objective": {"choice": ["wgan"]}}, "tune.space.gan.clip", "greater than 0"),
    ({"gan.l1_weight": {"normal": [100, 10]}}, "tune.space.gan.l1_weight", "unknown distribution 'normal'"),
    ({"gan.l1_weight": {"loguniform": [0, 100]}}, "tune.space.gan.l1_weight", "positive"),
    ({"gan.l1_weight": {"uniform": [100, 10]}}, "tune.space.gan.l1_weight", "low must be below high"),
    ({"gan.n_critic": {"randint": [1, 2.5]}}, "tune.space.gan.n_critic", "integers"),
    ({"gan.n_critic": {"randint": [0, 3]}}, "tune.space.gan.n_critic", "value 0"),
    ({"gan.lambda": {"choice": [1, 2]}}, "tune.space.gan.lambda", "unknown parameter"),
    ({"data.image_size": {"choice": [32, 64]}}, "tune.space.data.image_size", "other shards"),
    ({"train.iters": {"choice": [10, 20]}}, "tune.space.train.iters", "set by the tune section"),
    ({"train.batch_size": {"choice": [8, 64]}, "data.dataset_size": {"choice": [32, 512]}},
     "tune.space.train.batch_size", "larger than the dataset subset"),
    ({"gan.objective": {"choice": ["vanilla", "wgan-gp"]}, "model.d_norm": {"choice": ["batch"]}},
     "tune.space.model.d_norm", "gradient penalty"),
])
def test_an_impossible_knob_is_refused_naming_it(space, key, words):
    msg = _refused(space)
    assert msg.startswith(key + ":") or msg.startswith(key + "."), msg
    assert words in msg, msg


def test_a_batch_larger_than_the_training_split_is_refused():
    msg = _refused({"train.batch_size": {"choice": [8, 256]}}, train_count=100)
    assert msg.startswith("tune.space.train.batch_size:") and "100 images" in msg, msg


def test_a_batch_that_does_not_divide_over_the_trial_workers_is_refused():
    msg = _refused({"train.batch_size": {"choice": [8, 9]}}, num_workers=2)
    assert msg.startswith("tune.space.train.batch_size:") and "9" in msg, msg


def test_a_wgan_only_knob_without_wgan_trials_is_refused():
    msg = _refused({"gan.clip": {"loguniform": [0.001, 0.1]}})  # the base objective is vanilla
    assert msg.startswith("tune.space.gan.clip:") and "wgan" in msg, msg


def test_grid_search_expands_each_objective_with_its_own_knobs_only():
    knobs = parse_space({}, _tune({"gan.objective": {"choice": ["vanilla", "wgan"]},
                                   "gan.clip": {"choice": [0.01, 0.02]},
                                   "gan.n_critic": {"randint": [1, 3]}}, search="grid"))
    points = grid_points(knobs, "vanilla")
    assert len(points) == 3 + 2 * 3  # vanilla x n_critic, wgan x clip x n_critic
    assert all("gan.clip" not in p for p in points if p["gan.objective"] == "vanilla")
    assert sum(p["gan.objective"] == "wgan" and p["gan.clip"] == 0.02 for p in points) == 3
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)
    assert "grid search needs" in _refused({"gan.l1_weight": {"uniform": [1, 2]}}, search="grid")


def test_optuna_samples_the_clip_only_for_wgan_trials():
    import optuna

    knobs = parse_space({}, _tune({"gan.objective": {"choice": ["vanilla", "wgan"]},
                                   "gan.clip": {"loguniform": [0.005, 0.05]},
                                   "train.batch_size": {"choice": [8, 16]}}))
    space = OptunaSpace(knobs, "vanilla")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        space(trial)
        p = trial.params
        seen.add(p["gan.objective"])
        assert ("gan.clip" in p) == (p["gan.objective"] == "wgan"), p
        assert p.get("gan.clip", 0.01) >= 0.005 and p["train.batch_size"] in (8, 16)
        study.tell(trial, 1.0)
    assert seen == {"vanilla", "wgan"}


def test_a_trial_gets_the_tune_budget_and_resources_and_keeps_the_rest():
    base = {"gan": {"l1_weight": 50}, "train": {"iters": 5000, "lr_g": 1e-3}, "ray": {"num_workers": 4}}
    raw = trial_raw(base, _tune({}, iters=60, report_every=20, num_workers=1, cpus_per_worker=1),
                    {"train.batch_size": 16, "data.dataset_size": None})
    assert raw["train"] == {"iters": 60, "lr_g": 1e-3, "batch_size": 16, "checkpoint_every": 60, "resume": False}
    assert raw["ray"]["num_workers"] == 1 and raw["ray"]["report_every"] == raw["ray"]["eval_every"] == 20
    assert raw["gan"] == {"l1_weight": 50} and raw["data"] == {"dataset_size": None}
    assert base["train"]["iters"] == 5000  # the base is not modified


def test_tuned_values_apply_over_params_yaml(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"gan": {"l1_weight": 100, "objective": "vanilla"},
                                                          "train": {"batch_size": 32}}))
    (tmp_path / "best.yaml").write_text("# from a sweep\ngan:\n  objective: wgan\n  clip: 0.02\ntrain:\n  batch_size: 8\n")
    p = load_params(tmp_path / "params.yaml", tmp_path / "best.yaml")
    assert (p.gan.objective, p.gan.clip, p.gan.l1_weight, p.train.batch_size) == ("wgan", 0.02, 100, 8)
    assert p.train.optimizer == "rmsprop"  # wgan's own defaults follow the tuned objective
    (tmp_path / "bad.yaml").write_text("gan: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_params(tmp_path / "params.yaml", tmp_path / "bad.yaml")
    (tmp_path / "bad.yaml").write_text("gan:\n  clip: -1\n")
    with pytest.raises(ConfigError, match="gan.clip"):
        load_params(tmp_path / "params.yaml", tmp_path / "bad.yaml")


def test_the_tune_command_refuses_a_bad_knob_before_starting_ray(tmp_path, capsys, skimage_shards):
    import ray

    from colorray.cli import main

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tune"]["space"]["gan.clip"] = {"loguniform": [-0.01, 0.05]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit) as e:
        main(["tune", "--params", str(tmp_path / "params.yaml"), "--shards", str(skimage_shards),
              "--root", str(tmp_path), "--out", str(tmp_path / "tune")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "tune.space.gan.clip.loguniform: both ends must be positive" in err, err
    assert not ray.is_initialized() and not (tmp_path / "tune" / "best_params.yaml").exists()


def test_tune_disabled_runs_no_search_and_the_train_stage_uses_params_yaml(tmp_path, capsys, skimage_shards):
    import ray

    from colorray.cli import main

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tune"]["enabled"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    main(["tune", "--params", str(tmp_path / "params.yaml"), "--shards", str(skimage_shards),
          "--root", str(tmp_path), "--out", str(tmp_path / "tune")])
    assert "tune.enabled is false" in capsys.readouterr().out
    assert not ray.is_initialized() and not (tmp_path / "mlflow.db").exists()
    assert yaml.safe_load((tmp_path / "tune" / "best_params.yaml").read_text()) == {}
    assert (tmp_path / "tune" / "results.csv").read_text().splitlines()[1:] == []  # a header, no trials
    with_best = load_params(tmp_path / "params.yaml", tmp_path / "tune" / "best_params.yaml")
    assert with_best == load_params(tmp_path / "params.yaml")


def test_the_ranking_metric_is_fid_only_when_its_weights_exist(tmp_path):
    from colorray.config import parse_params
    from colorray.sweep.run import ranking_metric

    weights = tmp_path / "inception.pth"
    auto = parse_params({"metrics": {"fid_weights": str(weights)}})
    assert ranking_metric(auto) == "val/delta_cf"
    with pytest.raises(ConfigError, match=str(weights)):
        ranking_metric(parse_params({"metrics": {"fid_weights": str(weights)}, "tune": {"metric": "val/fid"}}))
    weights.write_bytes(b"present")
    assert ranking_metric(auto) == "val/fid"
    assert ranking_metric(parse_params({"tune": {"metric": "val/l1"}})) == "val/l1"


def _draws(search_cls, n: int) -> list[tuple]:
    """n suggestions of a seeded TPE over a 6-point space, each told a score as it comes."""
    import optuna

    knobs = parse_space({}, _tune({"gan.l1_weight": {"choice": [10, 100, 300]},
                                   "train.batch_size": {"choice": [8, 16]}}))
    search = search_cls(OptunaSpace(knobs, "vanilla"), metric="val/l1", mode="min",
                        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    points = []
    for i in range(n):
        config = search.suggest(str(i))
        point = (config["gan.l1_weight"], config["train.batch_size"])
        points.append(point)
        search.on_trial_complete(str(i), {"val/l1": point[0] / 100 + point[1] / 10})
    return points


def test_tpe_does_not_repeat_a_configuration_until_the_space_is_exhausted():
    from ray.tune.search.optuna import OptunaSearch

    from colorray.sweep.search import DistinctOptunaSearch

    plain = _draws(OptunaSearch, 6)
    assert len(set(plain)) < 6  # the failure this guards against: TPE repeats on a small space
    distinct = _draws(DistinctOptunaSearch, 7)
    assert len(set(distinct[:6])) == 6  # all 6 points, each once
    assert distinct[6] in distinct[:6]  # then, with every point tried, a repeat


def test_successive_halving_rungs_are_ashas_then_the_full_budget():
    from colorray.sweep.run import rungs

    assert rungs(TuneParams(iters=300, grace_iters=50, reduction_factor=3)) == [50, 150, 300]
    assert rungs(TuneParams(iters=100, grace_iters=20, reduction_factor=2)) == [20, 40, 80, 100]
    assert rungs(TuneParams(iters=8, grace_iters=8)) == [8]  # no rung before the end: no halving


def test_successive_halving_keeps_the_best_third_and_never_a_failed_trial():
    from colorray.sweep.run import promoted

    def row(trial_id, score, outcome="stopped early", checkpoint="ckpt"):
        return {"trial_id": trial_id, "score": score, "outcome": outcome, "checkpoint": checkpoint}

    rows = [row("a", 5.0), row("b", 1.0), row("c", 3.0), row("d", 1.0), row("e", 9.0), row("f", 2.0),
            row("g", 0.5, outcome="error"), row("h", None), row("i", 0.1, checkpoint="")]
    # 6 trials reached the rung with a score and a checkpoint: the best 6 // 3 = 2 go on, ties by id.
    assert [r["trial_id"] for r in promoted(rows, 3)] == ["b", "d"]
    assert [r["trial_id"] for r in promoted(rows[:2], 3)] == ["b"]  # at least one goes on
    assert promoted([row("g", 0.5, outcome="error")], 2) == []
