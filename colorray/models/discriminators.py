"""Discriminators / critics. Input: concat(L, ab), (N, 3, H, W). Output: raw scores, never a
sigmoid (losses own their nonlinearity). EBGAN's autoencoder returns its energy.

- `PatchDiscriminator`: N-layer PatchGAN with an explicit layer list; knows its receptive
  field (study 000's 46x46 at 64 px, pix2pix's 70x70 at 256 px).
- `DCGANCritic`: the same conv blocks ending in one dense unit: one score per image
  (what study 003 fell back to for WGAN-GP).
- `ResNetDiscriminator`: untrained torchvision ResNet-18/34/50/152 with one output (study 001).
- `AutoencoderDiscriminator`: EBGAN's energy function, E(x) = ||Dec(Enc(x)) - x||_2.
"""

from __future__ import annotations

import torch
from torch import nn

from colorray.models.layers import norm_layer
from colorray.presets import PIX2PIX_LAYERS

KERNEL = 4


def receptive_field(layers) -> int:
    """Receptive field of the stack `layers` + the final 4x4 stride-1 conv."""
    rf, jump = 1, 1
    for _, stride, _ in list(layers) + [(1, 1, 1)]:
        rf += (KERNEL - 1) * jump
        jump *= stride
    return rf


def _conv_stack(in_channels: int, layers, norm: str) -> nn.Sequential:
    mods, cin = [], in_channels
    for i, (cout, stride, pad) in enumerate(layers):
        mods.append(nn.Conv2d(cin, cout, KERNEL, stride, pad, bias=(i == 0 or norm == "none")))
        if i > 0:  # pix2pix: no norm on the first layer
            mods.append(norm_layer(norm, cout))
        mods.append(nn.LeakyReLU(0.2, inplace=True))
        cin = cout
    return nn.Sequential(*mods)


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, layers=PIX2PIX_LAYERS, norm: str = "batch"):
        super().__init__()
        self.layers = tuple(tuple(layer) for layer in layers)
        self.features = _conv_stack(in_channels, self.layers, norm)
        self.head = nn.Conv2d(self.layers[-1][0], 1, KERNEL, 1, 1)

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.layers)

    def extra_repr(self) -> str:
        return f"receptive_field={self.receptive_field}x{self.receptive_field}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DCGANCritic(nn.Module):
    """Strided conv blocks down to 4x4 (or less), then one dense unit: a global score."""

    def __init__(self, image_size: int, in_channels: int = 3, ndf: int = 64, norm: str = "batch"):
        super().__init__()
        layers, size, c = [], image_size, ndf
        while size > 4:
            layers.append((min(c, 512), 2, 1))
            size //= 2
            c *= 2
        self.features = _conv_stack(in_channels, layers, norm)
        self.head = nn.Linear(layers[-1][0] * size * size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class ResNetDiscriminator(nn.Module):
    """An untrained torchvision ResNet with a single output unit (study 001)."""

    def __init__(self, arch: str, norm: str = "batch"):
        super().__init__()
        # Imported here, not at the top: torchvision.models pulls in torch._dynamo, 2.5 s of
        # start-up for every process that builds any network (each Ray worker, each CLI call),
        # and only the study-001 presets use a ResNet critic.
        import torchvision.models

        norm_fn = None if norm == "batch" else (lambda c: norm_layer(norm, c))
        if norm == "instance":  # torchvision's blocks need an affine norm to train
            norm_fn = lambda c: nn.InstanceNorm2d(c, affine=True)  # noqa: E731
        self.net = getattr(torchvision.models, arch)(weights=None, num_classes=1, norm_layer=norm_fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AutoencoderDiscriminator(nn.Module):
    """EBGAN's discriminator (Zhao et al.): an autoencoder whose reconstruction error
    ||Dec(Enc(x)) - x||_2 is the energy, low on real data. forward() returns it per image, (N,)."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, norm: str = "batch", depth: int = 3):
        super().__init__()
        enc, dec, c = [], [], in_channels
        for i in range(depth):
            cout = ndf * 2**i
            enc += [nn.Conv2d(c, cout, 4, 2, 1), norm_layer(norm if i else "none", cout),
                    nn.LeakyReLU(0.2, inplace=True)]
            dec = [nn.ConvTranspose2d(cout, c, 4, 2, 1)] + (
                [norm_layer(norm, c), nn.ReLU(inplace=True)] if i else []) + dec
            c = cout
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        recon = self.decoder(self.encoder(x))
        return (recon - x).flatten(1).norm(dim=1)
