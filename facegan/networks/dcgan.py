"""DCGAN generator and discriminator (Radford et al.), built from small up/down blocks.

Pure modules: no devices, precision, distribution or files here. D returns logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrizations

from facegan.networks.common import RESOLUTIONS, DiscriminatorNet, GeneratorNet, unconditional


@dataclass(frozen=True)
class Options:
    d_batchnorm: bool = True  # BatchNorm in D's hidden layers (the DCGAN recipe); off with spectral norm or wgan-gp
    d_spectral_norm: bool = False  # spectral normalisation of every D layer


def _levels(resolution: int) -> int:
    """Number of 2x steps between 4x4 and the resolution."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution {resolution} is not supported; choose one of {RESOLUTIONS}")
    return int(math.log2(resolution)) - 2


def up(cin: int, cout: int) -> nn.Sequential:
    """2x upsampling: transposed conv 4x4 stride 2, BatchNorm, ReLU."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def down(cin: int, cout: int, batchnorm: bool, sn: bool) -> nn.Sequential:
    """2x downsampling: strided conv 4x4, optional BatchNorm, LeakyReLU 0.2."""
    conv = nn.Conv2d(cin, cout, 4, 2, 1, bias=not batchnorm)
    layers = [parametrizations.spectral_norm(conv) if sn else conv]
    if batchnorm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


class Generator(GeneratorNet):
    """z [B,z_dim] or [B,z_dim,1,1] -> image [B,3,R,R] in [-1,1]."""

    def __init__(self, resolution: int = 64, z_dim: int = 100, width: int = 64):
        super().__init__()
        self.resolution, self.z_dim, self.width = resolution, z_dim, width
        n = _levels(resolution)
        widths = [width * 2 ** (n - 1 - i) for i in range(n)]  # e.g. 512,256,128,64 at 64 px
        self.net = nn.Sequential(
            nn.ConvTranspose2d(z_dim, widths[0], 4, 1, 0, bias=False),  # [B,w0,4,4]
            nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
            *[up(widths[i], widths[i + 1]) for i in range(n - 1)],
            nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1, bias=False),  # [B,3,R,R]
            nn.Tanh(),
        )
        init_weights(self)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        unconditional(c, self)
        return self.net(z.view(z.shape[0], -1, 1, 1))

    def to_channels_last(self) -> Generator:
        """NHWC weights, except the first layer's: its input is z as [B,z,1,1], where both layouts
        are the same, so eager autograd returns a contiguous weight gradient and torch.compile,
        expecting the weight's layout, would fail its stride check."""
        self.to(memory_format=torch.channels_last)
        first = self.net[0]
        first.weight.data = first.weight.data.contiguous()
        return self


class Discriminator(DiscriminatorNet):
    """image [B,3,R,R] -> logits [B]."""

    def __init__(self, resolution: int = 64, width: int = 64, batchnorm: bool = True, spectral_norm: bool = False):
        super().__init__()
        self.resolution, self.width = resolution, width
        n = _levels(resolution)
        widths = [width * 2**i for i in range(n)]  # e.g. 64,128,256,512 at 64 px
        self.feature_dim = widths[-1] * 16  # the flattened 4x4 map the last conv reads
        last = nn.Conv2d(widths[-1], 1, 4, 1, 0)  # [B,1,1,1]
        self.net = nn.Sequential(
            down(3, widths[0], batchnorm=False, sn=spectral_norm),  # no BN on the input layer
            *[down(widths[i], widths[i + 1], batchnorm, spectral_norm) for i in range(n - 1)],
            parametrizations.spectral_norm(last) if spectral_norm else last,
        )
        init_weights(self)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        unconditional(c, self)
        return self.net(x).flatten()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, feature_dim]: what the last conv reads, flattened (a projection D's phi(x))."""
        return self.net[:-1](x).flatten(1)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits [B] from `features`: forward(x) == head(features(x))."""
        return self.net[-1](features.view(features.shape[0], -1, 4, 4)).flatten()


def init_weights(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02) and shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
