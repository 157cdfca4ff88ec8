"""Objectives and penalties on tiny tensors: signs, fixed points, invariants."""
import pytest
import torch

from colorray.config import parse_params
from colorray.gan.objectives import OBJECTIVES, build_objective
from colorray.gan.penalties import (gradient_penalty, instance_smoothing, linear_decay,
                                    r1_penalty)

SEPARATING = (torch.full((4, 1, 9, 9), 3.0), torch.full((4, 1, 9, 9), -3.0))  # D(real) >> D(fake)


@pytest.mark.parametrize("name", [n for n in OBJECTIVES if n != "ebgan"])
def test_losses_are_finite_and_reward_a_separating_discriminator(name):
    obj = build_objective(parse_params({"gan": {"objective": name}}).gan)
    real, fake = SEPARATING
    d_good, d_bad = obj.d_loss(real, fake), obj.d_loss(fake, real)
    g_losing, g_winning = obj.g_loss(fake), obj.g_loss(real)
    for v in (d_good, d_bad, g_losing, g_winning):
        assert torch.isfinite(v) and v.ndim == 0
    assert d_good < d_bad  # D's loss is lower when it separates real from fake
    assert g_losing > g_winning  # G's loss is higher when D calls its output fake
    if name in ("wgan", "wgan-gp"):
        assert d_good < 0 < d_bad  # the critic's loss is minus the estimated distance


def test_ebgan_energies():
    obj = build_objective(parse_params({"gan": {"objective": "ebgan"}, "model": {"discriminator": "autoencoder"}}).gan)
    low, high = torch.full((4,), 1.0), torch.full((4,), 50.0)  # real reconstructed well, fake above the margin 40
    assert obj.d_loss(low, high) == pytest.approx(1.0)  # E(real) + max(0, m - E(fake)) = 1 + 0
    assert obj.d_loss(high, low) == pytest.approx(50.0 + 39.0)
    assert obj.g_loss(high) > obj.g_loss(low)


def test_vanilla_label_smoothing_lowers_the_real_target():
    plain = build_objective(parse_params({}).gan)
    smooth = build_objective(parse_params({"gan": {"label_smoothing": 0.1}}).gan)
    real, fake = SEPARATING
    assert smooth.d_loss(real, fake) > plain.d_loss(real, fake)  # a confident D is penalised


def test_gradient_penalty_is_zero_for_a_1_lipschitz_linear_critic_and_positive_otherwise():
    torch.manual_seed(0)
    real, fake = torch.randn(6, 3, 8, 8), torch.randn(6, 3, 8, 8)
    w = torch.randn(3, 8, 8)
    unit = lambda x: (x * (w / w.norm())).flatten(1).sum(1)  # noqa: E731  ||grad|| = 1 everywhere
    double = lambda x: 2 * unit(x)  # noqa: E731
    assert gradient_penalty(unit, real, fake).item() == pytest.approx(0.0, abs=1e-10)
    assert gradient_penalty(double, real, fake).item() == pytest.approx(1.0, abs=1e-5)  # (2 - 1)^2


def test_gradient_penalty_is_differentiable_in_the_critic():
    net = torch.nn.Conv2d(3, 1, 3)
    gp = gradient_penalty(net, torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8))
    gp.backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0


def test_r1_is_zero_for_a_constant_critic_and_matches_the_closed_form_for_a_linear_one():
    x = torch.randn(5, 3, 4, 4)
    constant = lambda t: t.flatten(1).sum(1) * 0.0 + 7.0  # noqa: E731
    assert r1_penalty(constant, x).item() == 0.0
    w = torch.randn(3, 4, 4)
    linear = lambda t: (t * w).flatten(1).sum(1)  # noqa: E731
    assert r1_penalty(linear, x).item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)


def test_instance_smoothing_interpolates_toward_each_other_within_beta():
    real, fake = torch.ones(1000, 2, 1, 1), torch.zeros(1000, 2, 1, 1)
    x_r, x_f = instance_smoothing(real, fake, beta=0.5)
    assert x_r.min() >= 0.5 - 1e-6 and x_r.max() <= 1.0  # (1 - a) x + a G, a in [0, 0.5]
    assert x_f.min() >= 0.0 and x_f.max() <= 0.5 + 1e-6
    assert torch.allclose(x_r + x_f, torch.ones_like(x_r))  # the same a for both
    assert instance_smoothing(real, fake, beta=0.0) == (real, fake)


def test_linear_decay_schedule():
    assert [linear_decay(2.0, 4, i) for i in range(6)] == [2.0, 1.5, 1.0, 0.5, 0.0, 0.0]
    assert linear_decay(2.0, 0, 100) == 2.0
