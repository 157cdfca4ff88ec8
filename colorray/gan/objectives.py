"""GAN objectives: one small class each, chosen by name (`gan.objective` in params.yaml).

Each takes raw discriminator scores (no sigmoid inside D) and returns scalar losses:
`d_loss(real, fake)` for the discriminator/critic step and `g_loss(fake)` for the
generator's adversarial term. `after_d_step` is the hook WGAN uses to clip weights. What
each objective brings to the other sections (optimizer, learning rate, n_critic, penalty) is
data in colorray/defaults.yaml, read by colorray.config. `OBJECTIVES` maps names to
classes, and nothing else in the code branches on the name.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import nn


class Objective(abc.ABC):
    name = ""

    @classmethod
    def from_config(cls, gan) -> "Objective":
        """Build from the `gan` config section, taking only the options that concern it."""
        return cls()

    @abc.abstractmethod
    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Discriminator / critic loss from raw scores on real and fake inputs."""

    @abc.abstractmethod
    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial loss from raw scores on its outputs."""

    def after_d_step(self, D: nn.Module) -> None:
        """Called after every discriminator optimizer step."""


class Vanilla(Objective):
    """pix2pix / study 000: BCE on logits, D loss halved; G non-saturating BCE(fake, 1).
    `label_smoothing` eps sets the real target to 1 - eps (one-sided, Salimans et al.)."""

    name = "vanilla"

    def __init__(self, label_smoothing: float = 0.0):
        self.real_target = 1.0 - label_smoothing

    @classmethod
    def from_config(cls, gan):
        return cls(label_smoothing=gan.label_smoothing)

    def d_loss(self, real, fake):
        return 0.5 * (F.binary_cross_entropy_with_logits(real, torch.full_like(real, self.real_target))
                      + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))

    def g_loss(self, fake):
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


class LSGAN(Objective):
    """Mao et al. with a=0, b=1, c=1 (study 004)."""

    name = "lsgan"

    def d_loss(self, real, fake):
        return 0.5 * (real - 1).pow(2).mean() + 0.5 * fake.pow(2).mean()

    def g_loss(self, fake):
        return 0.5 * (fake - 1).pow(2).mean()


class WGAN(Objective):
    """Arjovsky et al.: critic maximises D(real) - D(fake), weights clipped to +-c after
    every critic step, RMSprop 5e-5, n_critic = 5."""

    name = "wgan"

    def __init__(self, clip: float = 0.01):
        self.clip = clip

    @classmethod
    def from_config(cls, gan):
        return cls(clip=gan.clip)

    def d_loss(self, real, fake):
        return fake.mean() - real.mean()

    def g_loss(self, fake):
        return -fake.mean()

    @torch.no_grad()
    def after_d_step(self, D):
        for p in D.parameters():
            p.clamp_(-self.clip, self.clip)


class WGANGP(WGAN):
    """Gulrajani et al.: WGAN losses, no clipping, gradient penalty 10, Adam 1e-4 (0, 0.9)."""

    name = "wgan-gp"

    def __init__(self):
        super().__init__(clip=float("inf"))

    @classmethod
    def from_config(cls, gan):
        return cls()

    def after_d_step(self, D):
        """No clipping: the gradient penalty replaces it."""


class EBGAN(Objective):
    """Zhao et al.: D is an autoencoder whose scores are energies (reconstruction error);
    D minimises E(real) + max(0, m - E(fake)), G minimises E(fake). Margin m (study 004: 40)."""

    name = "ebgan"

    def __init__(self, margin: float = 40.0):
        self.margin = margin

    @classmethod
    def from_config(cls, gan):
        return cls(margin=gan.ebgan_margin)

    def d_loss(self, real, fake):
        return real.mean() + F.relu(self.margin - fake).mean()

    def g_loss(self, fake):
        return fake.mean()


class Softplus(Objective):
    """Study 001 (and StyleGAN2): f = softplus, D minimises f(-D(real)) + f(D(fake)), G the
    non-saturating f(-D(fake)); usually with R1 and instance noise."""

    name = "softplus"

    def d_loss(self, real, fake):
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def g_loss(self, fake):
        return F.softplus(-fake).mean()


class Hinge(Objective):
    """Lim & Ye / SAGAN hinge loss."""

    name = "hinge"

    def d_loss(self, real, fake):
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()

    def g_loss(self, fake):
        return -fake.mean()


OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (Vanilla, LSGAN, WGAN, WGANGP, EBGAN, Softplus, Hinge)
}


def build_objective(gan) -> Objective:
    return OBJECTIVES[gan.objective].from_config(gan)
