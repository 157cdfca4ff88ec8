"""Penalties and input perturbations as pure functions; the training step decides weights
and schedules (stylegan2-ada's split: loss terms here, phases in the step)."""

from __future__ import annotations

from typing import Callable

import torch

Critic = Callable[[torch.Tensor], torch.Tensor]


def _input_grad(critic: Critic, x: torch.Tensor) -> torch.Tensor:
    """d(sum of scores)/dx, kept in the graph so the penalty can be backpropagated."""
    x = x.detach().requires_grad_(True)
    scores = critic(x)
    (grad,) = torch.autograd.grad(scores.float().sum(), x, create_graph=True)
    return grad.flatten(1)


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor,
                     alpha: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al.): E[(||grad D(x_hat)||_2 - 1)^2] at x_hat = a*real + (1-a)*fake,
    a ~ U[0, 1] per image unless given. real/fake are full D inputs, concat(L, ab)."""
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = alpha * real.detach() + (1 - alpha) * fake.detach()
    return (_input_grad(critic, x_hat).norm(dim=1) - 1).pow(2).mean()


def r1_penalty(critic: Critic, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[||grad D(real)||_2^2]; weight it by gamma / 2."""
    return _input_grad(critic, real).pow(2).sum(1).mean()


def linear_decay(start: float, iters: int, it: int) -> float:
    """`start` at it = 0, falling linearly to 0 at it = iters (0 after); iters = 0: constant."""
    return start * max(0.0, 1.0 - it / iters) if iters > 0 else start


def add_instance_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Instance noise (Sønderby et al.): Gaussian noise of std `sigma` on D's inputs."""
    if sigma <= 0:
        return x
    return x + sigma * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)


def instance_smoothing(real_ab: torch.Tensor, fake_ab: torch.Tensor, beta: float,
                       u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Study 001: a ~ U[0, beta] per image; x_F = a*x + (1-a)*G(y), x_R = (1-a)*x + a*G(y).
    `u` ~ U[0, 1] per image, (N, 1, 1, 1), may be given. Returns (x_R, x_F)."""
    if beta <= 0:
        return real_ab, fake_ab
    if u is None:
        u = torch.rand(real_ab.shape[0], 1, 1, 1, device=real_ab.device)
    a = beta * u.to(real_ab)
    return (1 - a) * real_ab + a * fake_ab, a * real_ab + (1 - a) * fake_ab
