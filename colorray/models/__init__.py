"""Build the generator and discriminator a config describes."""

from __future__ import annotations

from torch import nn

from colorray.config import Params
from colorray.models.discriminators import (AutoencoderDiscriminator, DCGANCritic, PatchDiscriminator,
                                            ResNetDiscriminator)
from colorray.models.generators import UNetGenerator, ZhangGenerator
from colorray.models.layers import init_normal
from colorray.presets import PIX2PIX_LAYERS

D_IN_CHANNELS = 3  # concat(L, ab)


def build_generator(params: Params) -> nn.Module:
    m = params.model
    if m.generator == "zhang":
        G = ZhangGenerator(m.g_in_channels, width=m.g_channels, norm=m.g_norm, chroma_gain=params.generator_gain())
    else:
        G = UNetGenerator(params.generator_depth(), m.g_in_channels, m.g_channels, m.g_channels_max,
                          m.g_norm, m.g_dropout, m.g_dropout_blocks, m.g_skip_norm, m.g_down, m.g_up,
                          chroma_gain=params.generator_gain())
    init_normal(G, m.init_std)
    return G


def build_discriminator(params: Params) -> nn.Module:
    m = params.model
    if m.discriminator == "patch":
        layers = m.d_layers or tuple((min(m.d_channels * 2**i, 8 * m.d_channels), s, p)
                                     for i, (_, s, p) in enumerate(PIX2PIX_LAYERS))
        D = PatchDiscriminator(D_IN_CHANNELS, layers, m.d_norm)
    elif m.discriminator == "dcgan":
        D = DCGANCritic(params.data.image_size, D_IN_CHANNELS, m.d_channels, m.d_norm)
    elif m.discriminator == "autoencoder":
        D = AutoencoderDiscriminator(D_IN_CHANNELS, m.d_channels, m.d_norm)
    else:
        D = ResNetDiscriminator(m.discriminator, m.d_norm)
    init_normal(D, m.init_std)
    return D
