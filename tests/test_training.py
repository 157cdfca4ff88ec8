"""The training step: critic schedule, clipping, phases, schedules, checkpoints and resume."""
import math

import pytest
import torch

from colorray.config import parse_params
from colorray.presets import PRESETS
from colorray.train.loop import train_local
from colorray.train.schedules import lr_factor
from colorray.train.step import GANTrainer, checkpoint_params, load_checkpoint

TINY = {"model": {"g_channels": 4, "g_channels_max": 16, "d_channels": 4}, "data": {"image_size": 32}}


def _params(**sections):
    raw = {k: dict(v) for k, v in TINY.items()}
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return parse_params(raw)


def _batches(n, size=32, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(batch, 1, size, size, generator=g) * 2 - 1,
             torch.rand(batch, 2, size, size, generator=g) * 0.6 - 0.3) for _ in range(n)]


def test_wgan_clips_every_critic_weight_after_every_critic_step():
    trainer = GANTrainer(_params(gan={"objective": "wgan", "clip": 0.01}, train={"lr_d": 0.5}))
    seen = []
    original = trainer.objective.after_d_step

    def check(D):
        original(D)
        seen.append(max(p.abs().max().item() for p in D.parameters()))

    trainer.objective.after_d_step = check
    for _ in range(2):
        trainer.train_iteration(_batches(trainer.batches_needed()))
    assert len(seen) == 10 and max(seen) <= 0.01 + 1e-9  # 5 critic steps x 2 iterations


@pytest.mark.parametrize("n_critic", [1, 3, 7])
def test_the_critic_runs_exactly_n_critic_steps_per_generator_step(n_critic):
    trainer = GANTrainer(_params(gan={"objective": "hinge", "n_critic": n_critic}))
    d_steps = []
    trainer.opt_d.register_step_post_hook(lambda *a: d_steps.append(trainer.iter))
    for _ in range(3):
        trainer.train_iteration(_batches(trainer.batches_needed()))
    assert trainer.batches_needed() == n_critic
    assert [d_steps.count(i) for i in range(3)] == [n_critic] * 3 and trainer.iter == 3
    with pytest.raises(ValueError, match=f"needs {n_critic} batches"):
        trainer.train_iteration(_batches(n_critic + 1))


def test_pretraining_phase_trains_only_the_generator_then_the_adversarial_phase_starts():
    trainer = GANTrainer(_params(gan={"objective": "wgan-gp", "pretrain_iters": 2}))
    before = [p.clone() for p in trainer.D.parameters()]
    for _ in range(2):
        m = trainer.train_iteration(_batches(trainer.batches_needed()))
        assert "loss/d" not in m and "loss/g/adv" not in m
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.D.parameters()))
    assert trainer.batches_needed() == 5
    m = trainer.train_iteration(_batches(5))
    assert m["loss/d/gp"] >= 0 and "loss/g/adv" in m


def test_reconstruction_only_builds_no_discriminator():
    trainer = GANTrainer(_params(gan={"adv_weight": 0.0, "huber_weight": 1.0}))
    assert trainer.D is None
    m = trainer.train_iteration(_batches(1))
    assert set(m) == {"loss/g/l1", "loss/g/huber", "lr/g"}


def test_stabilizers_report_their_terms():
    trainer = GANTrainer(_params(gan={"objective": "softplus", "r1_gamma": 10.0, "r1_interval": 2,
                                      "instance_noise": 1.4, "instance_noise_iters": 10,
                                      "instance_smoothing": 0.5, "instance_smoothing_iters": 10}))
    m0 = trainer.train_iteration(_batches(1))
    m1 = trainer.train_iteration(_batches(1))
    assert "loss/d/r1" in m0 and "loss/d/r1" not in m1  # lazy: every second critic step
    assert all(math.isfinite(v) for v in {**m0, **m1}.values())


def test_lr_schedules():
    assert lr_factor("constant", 50, 100) == 1.0
    assert [lr_factor("linear", i, 100, 0.5) for i in (0, 49, 50, 75, 100)] == [1.0, 1.0, 1.0, 0.5, 0.0]
    assert lr_factor("cosine", 0, 100) == pytest.approx(1.0)
    assert lr_factor("cosine", 100, 100) == pytest.approx(0.1)  # study 003: down to lr/10
    trainer = GANTrainer(_params(train={"lr_schedule": "cosine", "iters": 4, "lr_g": 1e-3}))
    lrs = [trainer.train_iteration(_batches(1))["lr/g"] for _ in range(4)]
    assert lrs[0] == pytest.approx(1e-3) and lrs == sorted(lrs, reverse=True)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_steps_run_on_cpu(amp):
    trainer = GANTrainer(_params(train={"amp": amp}, gan={"objective": "softplus", "r1_gamma": 1.0},
                                 model={"d_norm": "instance"}))
    m = trainer.train_iteration(_batches(1))
    assert all(math.isfinite(v) for v in m.values())


def test_checkpoint_is_self_describing_and_loads_with_weights_only(tmp_path):
    p = _params(gan={"objective": "wgan"})
    trainer = GANTrainer(p)
    trainer.train_iteration(_batches(5))
    trainer.save(tmp_path / "ck.pt")
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert state["format"] == "colorray-checkpoint-1" and state["iter"] == 1
    assert {"G", "D", "opt_g", "opt_d", "sched_g", "sched_d", "params", "rng"} <= set(state)
    again = load_checkpoint(tmp_path / "ck.pt")
    assert again.params == p and again.iter == 1 and again.d_steps == 5
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception):
        load_checkpoint(tmp_path / "bad.pt")


def test_a_truncated_checkpoint_is_a_named_error_not_a_torch_traceback(tmp_path):
    trainer = GANTrainer(_params(train={"amp": "none", "channels_last": False}))
    trainer.save(tmp_path / "ck.pt")
    data = (tmp_path / "ck.pt").read_bytes()
    (tmp_path / "ck.pt").write_bytes(data[: len(data) // 2])  # a copy cut off half-way
    with pytest.raises(ValueError, match=r"ck\.pt: not a readable colorray checkpoint .*train\.resume: false"):
        checkpoint_params(tmp_path / "ck.pt")
    with pytest.raises(ValueError, match=r"ck\.pt: not a readable colorray checkpoint"):
        load_checkpoint(tmp_path / "ck.pt")


@pytest.mark.slow
@pytest.mark.parametrize("gan", [{"objective": "vanilla"},
                                 {"objective": "wgan-gp", "instance_noise": 0.5, "instance_noise_iters": 8}])
def test_resume_continues_bit_for_bit(tmp_path, skimage_shards, gan):
    raw = {"model": {"g_channels": 4, "g_channels_max": 16, "d_channels": 4, "g_depth": 4},
           "gan": {**gan, "n_critic": 2}, "train": {"batch_size": 16, "iters": 6, "checkpoint_every": 3},
           "loader": {"num_workers": 1}}
    p = parse_params(raw)
    quiet = lambda *_: None  # noqa: E731
    full = train_local(p, skimage_shards, tmp_path / "full", log=quiet)
    train_local(p, skimage_shards, tmp_path / "split", max_iters=3, log=quiet)
    resumed = train_local(p, skimage_shards, tmp_path / "split", log=quiet)  # picks up the checkpoint
    assert full.iter == resumed.iter == 6 and full.data_position == resumed.data_position
    for a, b in zip(full.state_dict()["G"].values(), resumed.state_dict()["G"].values()):
        assert torch.equal(a, b)
    for a, b in zip(full.state_dict()["D"].values(), resumed.state_dict()["D"].values()):
        assert torch.equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_runs_an_iteration(name):
    size = PRESETS[name]["data"]["image_size"]
    # fp32, contiguous: a check of the numerics (finite losses), not of the speed (no probe).
    # One iteration at the preset's image size: a generator step, after n_critic critic steps
    # where the preset trains adversarially from the start (a second iteration costs as much
    # again: 17 s for 003-wgan-gp on one AVX2 core).
    p = parse_params({"preset": name, "data": {"image_size": size},
                      "train": {"batch_size": 2, "amp": "none", "channels_last": False}})
    assert p.train.batch_size == 2  # an explicit value overrides the preset
    for key, value in PRESETS[name]["gan"].items():
        assert getattr(p.gan, key) == value  # everything else the preset sets is in force
    torch.manual_seed(0)
    trainer = GANTrainer(p)
    m = trainer.train_iteration(_batches(trainer.batches_needed(), size=size, batch=2))
    assert all(math.isfinite(v) for v in m.values()), m
    assert trainer.iter == 1


def test_resuming_with_changed_parameters_is_refused(tmp_path, skimage_shards):
    raw = {"model": {"g_channels": 4, "g_channels_max": 16, "d_channels": 4, "g_depth": 3},
           "train": {"batch_size": 8, "iters": 1}, "loader": {"num_workers": 0}}
    quiet = lambda *_: None  # noqa: E731
    train_local(parse_params(raw), skimage_shards, tmp_path, log=quiet)
    raw["train"]["iters"] = 2  # training longer is allowed, and elsewhere on other resources
    raw["ray"] = {"storage_path": str(tmp_path / "elsewhere"), "placement_strategy": "SPREAD", "cpus_per_worker": 1}
    assert train_local(parse_params(raw), skimage_shards, tmp_path, log=quiet).iter == 2
    raw["ray"]["num_workers"] = 2
    with pytest.raises(ValueError, match=r"other parameters \(ray.num_workers\)"):
        train_local(parse_params(raw), skimage_shards, tmp_path, log=quiet)
    del raw["ray"]["num_workers"]
    raw["gan"] = {"l1_weight": 10.0}
    with pytest.raises(ValueError, match=r"other parameters \(gan.l1_weight\)"):
        train_local(parse_params(raw), skimage_shards, tmp_path, log=quiet)
