"""SNGAN / BigGAN-style ResNet generator and discriminator (Miyato et al. 2018, Brock et al. 2019).

G: z -> linear -> 4x4 -> upsampling residual blocks (BatchNorm, ReLU, nearest 2x, 3x3 convs) ->
BatchNorm, ReLU, 3x3 conv to RGB, tanh. D: downsampling residual blocks (ReLU, 3x3 convs, 2x2
average pooling; the first block "optimised" as in SNGAN, with no ReLU on the image), ReLU, sum
over the 4x4 positions, linear; spectral normalisation on every D layer. Stage widths follow
`stage_widths` (the width at full resolution, doubling per halving up to 8x), as dcgan's do.

Pure modules: no devices, precision, distribution or files here. D returns logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from facegan.networks.common import DiscriminatorNet, GeneratorNet, stage_widths, unconditional


@dataclass(frozen=True)
class Options:
    d_spectral_norm: bool = True  # spectral normalisation of every D layer (SNGAN; keep it with hinge)


def _init(layer: nn.Module, gain: float) -> nn.Module:
    """SNGAN's init: Xavier-uniform weights (gain sqrt 2 inside residual branches), zero biases."""
    nn.init.xavier_uniform_(layer.weight, gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _conv(cin: int, cout: int, k: int, gain: float = math.sqrt(2)) -> nn.Conv2d:
    return _init(nn.Conv2d(cin, cout, k, 1, k // 2), gain)


class GBlock(nn.Module):
    """BN, ReLU, nearest 2x up, 3x3 conv, BN, ReLU, 3x3 conv; shortcut: 2x up, 1x1 conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv(cin, cout, 3)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), _conv(cout, cout, 3)
        self.skip = _conv(cin, cout, 1, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """[ReLU], 3x3 conv, ReLU, 3x3 conv, 2x2 average pool; shortcut: 1x1 conv and pool (SNGAN's
    order: pool after the 1x1 in later blocks, before it in the first, "optimised" one)."""

    def __init__(self, cin: int, cout: int, first: bool, sn: bool):
        super().__init__()
        wrap = parametrizations.spectral_norm if sn else (lambda m: m)
        self.first = first
        self.conv1, self.conv2 = wrap(_conv(cin, cout, 3)), wrap(_conv(cout, cout, 3))
        self.skip = wrap(_conv(cin, cout, 1, gain=1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x if self.first else F.relu(x))
        h = F.avg_pool2d(self.conv2(F.relu(h)), 2)
        skip = self.skip(F.avg_pool2d(x, 2)) if self.first else F.avg_pool2d(self.skip(x), 2)
        return h + skip


class Generator(GeneratorNet):
    """z [B,z_dim] -> image [B,3,R,R] in [-1,1]."""

    def __init__(self, resolution: int = 64, z_dim: int = 128, width: int = 64):
        super().__init__()
        self.resolution, self.z_dim, self.width = resolution, z_dim, width
        widths = stage_widths(resolution, width)  # 4x4 first
        self.linear = _init(nn.Linear(z_dim, widths[0] * 16), 1.0)
        self.blocks = nn.Sequential(*[GBlock(widths[i], widths[i + 1]) for i in range(len(widths) - 1)])
        self.out = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(), _conv(widths[-1], 3, 3, gain=1.0), nn.Tanh())

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        unconditional(c, self)
        x = self.linear(z.flatten(1)).view(z.shape[0], -1, 4, 4)
        return self.out(self.blocks(x))


class Discriminator(DiscriminatorNet):
    """image [B,3,R,R] -> logits [B]."""

    def __init__(self, resolution: int = 64, width: int = 64, spectral_norm: bool = True):
        super().__init__()
        self.resolution, self.width = resolution, width
        widths = stage_widths(resolution, width)[::-1]  # full resolution first
        self.blocks = nn.Sequential(*[DBlock(3 if i == 0 else widths[i - 1], widths[i], i == 0, spectral_norm)
                                      for i in range(len(widths) - 1)])
        linear = _init(nn.Linear(widths[-2], 1), 1.0)
        self.linear = parametrizations.spectral_norm(linear) if spectral_norm else linear
        self.feature_dim = widths[-2]

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        unconditional(c, self)
        return self.head(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, feature_dim]: the summed 4x4 activations the last linear map reads (phi(x))."""
        return F.relu(self.blocks(x)).sum(dim=(2, 3))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).flatten()
