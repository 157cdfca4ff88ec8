"""Generators: L (N, 1 or 3, H, W) in [-1, 1] -> ab (N, 2, H, W) through tanh.

- `UNetGenerator`: the pix2pix U-Net (Isola et al.), with the variations the studies used:
  depth from the image size, batch/instance/no norm, dropout on chosen decoder blocks,
  learned-affine instance norm on the skip connections (study 001), strided-conv or maxpool
  down, transposed-conv, bilinear+conv or PixelTCL up (study 003), 1- or 3-channel input.
- `PixelTCL`: pixel transposed convolution (Gao et al., "Pixel Transposed Convolutional
  Networks", TPAMI 2019), the upsampling of study 003's PixelGAN.
- `ZhangGenerator`: the "Colorful Image Colorization" CNN (Zhang et al. 2016) regressing ab
  instead of classifying 313 bins, as study 004 did.

Both multiply their ab by `model.chroma_gain` (1 unless set): a saturation that needs no
training, how the shipped base model trades a GAN's vivid colors for fidelity.
"""

from __future__ import annotations

import torch
from torch import nn

from colorray.models.layers import norm_layer


def _scaled(ab: torch.Tensor, gain: float) -> torch.Tensor:
    """`ab` times the model's chroma gain (untouched at 1: bit for bit what was trained)."""
    return ab if gain == 1.0 else ab * gain


class PixelTCL(nn.Module):
    """2x upsampling whose four output phases are generated in sequence (Gao et al.).

    F1 = conv(x); F2 = conv(F1); F1 and F2 fill the (0,0) and (1,1) phases of the 2x map
    (dilate and add); a 3x3 conv over that map, which holds zeros at the missing phases
    (the masked kernel), produces F3 and F4 at the (0,1) and (1,0) phases; all are summed.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv34 = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.conv1(x)
        f2 = self.conv2(f1)
        n, c, h, w = f1.shape
        y = f1.new_zeros(n, c, 2 * h, 2 * w)
        y[:, :, 0::2, 0::2] = f1
        y[:, :, 1::2, 1::2] = f2
        f34 = self.conv34(y)
        mask = torch.zeros(2, 2, dtype=f1.dtype, device=f1.device)
        mask[0, 1] = mask[1, 0] = 1.0
        return y + f34 * mask.repeat(h, w)


def _down(cin: int, cout: int, mode: str) -> nn.Module:
    if mode == "conv":
        return nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2))


def _up(cin: int, cout: int, mode: str, bias: bool) -> nn.Module:
    if mode == "transpose":
        return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=bias)
    if mode == "bilinear":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                             nn.Conv2d(cin, cout, 3, padding=1, bias=bias))
    return PixelTCL(cin, cout)


class UNetGenerator(nn.Module):
    """pix2pix U-Net: `depth` down blocks (each halves H, W), mirrored up blocks, skips.

    Down block i: [LeakyReLU(0.2) unless first] Conv [Norm unless first or innermost].
    Up block j (j = 0 is the innermost): ReLU, Up, [Norm unless outermost], [Dropout if j in
    `dropout_blocks`]; the outermost maps to 2 channels (ab) and ends in tanh.
    """

    def __init__(self, depth: int, in_channels: int = 1, ngf: int = 64, ngf_max: int = 512,
                 norm: str = "batch", dropout: float = 0.5, dropout_blocks: tuple[int, ...] = (1, 2, 3),
                 skip_norm: bool = False, down: str = "conv", up: str = "transpose", chroma_gain: float = 1.0):
        super().__init__()
        self.chroma_gain = chroma_gain  # a constant, not a weight (model.chroma_gain)
        ch = [min(ngf * 2**i, ngf_max) for i in range(depth)]
        self.in_channels = in_channels
        self.stride = 2**depth  # its input's sides must be multiples of this
        self.enc = nn.ModuleList()
        for i in range(depth):
            layers = [] if i == 0 else [nn.LeakyReLU(0.2, inplace=True)]
            layers.append(_down(in_channels if i == 0 else ch[i - 1], ch[i], down))
            if 0 < i < depth - 1:
                layers.append(norm_layer(norm, ch[i]))
            self.enc.append(nn.Sequential(*layers))
        self.skip_norms = nn.ModuleList(
            nn.InstanceNorm2d(ch[i], affine=True) if skip_norm else nn.Identity() for i in range(depth - 1))
        self.dec = nn.ModuleList()
        for j in range(depth):
            level = depth - 1 - j  # the encoder level this block restores
            cin = ch[depth - 1] if j == 0 else 2 * ch[level]
            outermost = j == depth - 1
            cout = 2 if outermost else ch[level - 1]
            layers = [nn.ReLU(inplace=False), _up(cin, cout, up, bias=outermost)]
            if not outermost:
                layers.append(norm_layer(norm, cout))
                if j in dropout_blocks and dropout > 0:
                    layers.append(nn.Dropout(dropout))
            self.dec.append(nn.Sequential(*layers))

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        if L.shape[1] != self.in_channels:
            L = L.expand(-1, self.in_channels, -1, -1)  # study 000 feeds L repeated 3 times
        feats, h = [], L
        for block in self.enc:
            h = block(h)
            feats.append(h)
        h = self.dec[0](feats[-1])
        for j in range(1, len(self.dec)):
            level = len(self.dec) - 1 - j
            h = self.dec[j](torch.cat((self.skip_norms[level](feats[level]), h), 1))
        return _scaled(torch.tanh(h), self.chroma_gain)


class ZhangGenerator(nn.Module):
    """Zhang et al.'s colorization CNN: 8 conv blocks (2-3 convs + ReLU each, BatchNorm after),
    total stride 4 with dilated blocks 5-6, regressing ab at 1/4 resolution, upsampled x4."""

    def __init__(self, in_channels: int = 1, width: int = 64, norm: str = "batch", chroma_gain: float = 1.0):
        super().__init__()
        self.chroma_gain = chroma_gain  # a constant, not a weight (model.chroma_gain)
        w = width
        # (out channels, number of convs, stride of the last conv, dilation)
        spec = [(w, 2, 2, 1), (2 * w, 2, 2, 1), (4 * w, 3, 2, 1), (8 * w, 3, 1, 1),
                (8 * w, 3, 1, 2), (8 * w, 3, 1, 2), (8 * w, 3, 1, 1)]
        self.in_channels = in_channels
        self.stride = 8  # three stride-2 blocks, undone by x2 then x4
        blocks, cin = [], in_channels
        for cout, n, stride, dil in spec:
            layers = []
            for k in range(n):
                s = stride if k == n - 1 else 1
                layers += [nn.Conv2d(cin, cout, 3, stride=s, padding=dil, dilation=dil),
                           nn.ReLU(inplace=True)]
                cin = cout
            layers.append(norm_layer(norm, cout))
            blocks.append(nn.Sequential(*layers))
        blocks.append(nn.Sequential(  # block 8: upsample x2 and three convs
            nn.ConvTranspose2d(cin, 4 * w, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU(inplace=True)))
        self.body = nn.Sequential(*blocks)
        self.head = nn.Conv2d(4 * w, 2, 1)
        self.upsample = nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        if L.shape[1] != self.in_channels:
            L = L.expand(-1, self.in_channels, -1, -1)
        return _scaled(torch.tanh(self.upsample(self.head(self.body(L)))), self.chroma_gain)
