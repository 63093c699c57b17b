"""R3GAN's modernised generator and discriminator (Huang et al., "The GAN is dead; long live the
GAN! A Modern GAN Baseline", NeurIPS 2024), written from the paper and its published settings.

- Residual blocks: 1x1 conv (expand x`expansion`), biased leaky ReLU, grouped 3x3 conv
  (`group_width` channels per group), biased leaky ReLU, 1x1 conv back; added to the input.
- No normalisation layers. Fix-up-style initialisation instead: each branch's first two convs
  are He-initialised and scaled by L^-1/4 (L = blocks in the network), the last one is zero, so
  every block starts as the identity and the network's variance does not grow with depth.
- Low-pass resampling: 2x up by zero insertion and the [1,2,1] filter (interpolation), 2x down
  by the [1,2,1] filter and stride 2; a 1x1 conv changes the width before upsampling and after
  downsampling.
- G starts from a learned 4x4 basis scaled per channel by a linear map of z and ends with a 1x1
  conv to RGB; D mirrors it: 1x1 conv from RGB, stages down to 4x4, then a depthwise 4x4 conv
  and a linear map to one logit.

Where this departs from the paper (docs/recipes.md):
- stage widths follow `stage_widths` (width at full resolution, doubling per halving, capped at
  8x) instead of the paper's constant 768-1536 channels per stage, which a CPU cannot train;
- G's output is not squashed, as in the paper: images come out near [-1,1] and every consumer
  (grids, FID, exports' samples) clamps to [-1,1];
- each biased activation's bias is the bias of the conv before it (the same function, one memory
  pass fewer), and the leaky ReLU runs in place (no fused CUDA kernel);
- no mixed-precision stage split (the training loop's --mixed-precision covers the whole net);
- kernels, not functions: on a GPU the convolutions are `conv.Conv2d` (derivatives of every
  order as single grouped convolutions, for R1 and R2), and D's downsampling and last depthwise
  conv are elementwise, because PyTorch differentiates grouped and depthwise convs twice one
  group at a time (bench/RESULTS.md).

Pure modules: no devices, precision, distribution or files here. D returns logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from facegan.networks.common import DiscriminatorNet, GeneratorNet, stage_widths, unconditional
from facegan.networks.conv import Conv2d

SLOPE = 0.2
ACT_GAIN = math.sqrt(2 / (1 + SLOPE**2))  # He gain of a leaky ReLU with slope 0.2


@dataclass(frozen=True)
class Options:
    g_blocks: int = 2  # residual blocks per G stage (the paper: 2)
    g_expansion: int = 2  # inverted-bottleneck expansion of each G block (the paper: 2)
    g_group_width: int = 16  # channels per group of G's grouped 3x3 convs (the paper: 16)
    d_blocks: int = 2  # residual blocks per D stage (the paper: 2)
    d_expansion: int = 2  # inverted-bottleneck expansion of each D block (the paper: 2)
    d_group_width: int = 16  # channels per group of D's grouped 3x3 convs (the paper: 16)


def _he(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    """N(0, gain^2 / fan_in) weights; gain 0 gives zeros."""
    fan_in = layer.weight[0].numel()
    nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(fan_in))
    return layer


def _groups(channels: int, group_width: int) -> int:
    """The most groups of at least `group_width` channels that divide `channels` (1 at least)."""
    groups = max(channels // group_width, 1)
    while channels % groups:
        groups -= 1
    return groups


def _biased(conv: nn.Conv2d) -> nn.Conv2d:
    """A conv whose bias (zero at init) is the following activation's: the paper's biased leaky
    ReLU, with the bias added inside the convolution instead of by a separate pass over memory."""
    nn.init.zeros_(conv.bias)
    return conv


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, SLOPE, inplace=True)  # in place on a conv output: one tensor fewer


class Block(nn.Module):
    """x + 1x1(act(grouped 3x3(act(1x1(x))))), identity at initialisation."""

    def __init__(self, channels: int, expansion: int, group_width: int, total_blocks: int):
        super().__init__()
        wide = channels * expansion
        gain = ACT_GAIN * total_blocks ** (-1 / 4)  # fix-up: L^(-1/(2m-2)) with m = 3 layers
        self.expand = _biased(_he(Conv2d(channels, wide, 1), gain))
        self.mix = _biased(_he(Conv2d(wide, wide, 3, padding=1, groups=_groups(wide, group_width)), gain))
        self.project = _he(Conv2d(wide, channels, 1, bias=False), 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(_act(self.mix(_act(self.expand(x)))))


def _shift(x: torch.Tensor, dim: int, step: int) -> torch.Tensor:
    """x moved by `step` (+1 or -1) along `dim`, zeros shifted in: x[i - step]."""
    n = x.shape[dim]
    zeros = torch.zeros_like(x.narrow(dim, 0, 1))
    if step > 0:
        return torch.cat([zeros, x.narrow(dim, 0, n - 1)], dim)
    return torch.cat([x.narrow(dim, 1, n - 1), zeros], dim)


def upsample(x: torch.Tensor) -> torch.Tensor:
    """2x up: zero insertion and the [1,2,1] filter, i.e. x[i] at 2i and (x[i] + x[i+1]) / 2 at
    2i+1 (0 past the end), along H and W. Written as elementwise passes, not a depthwise
    transposed convolution, whose second derivative (R1) PyTorch computes channel by channel."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    for dim in (2, 3):
        x = torch.stack([x, (x + _shift(x, dim, -1)) * 0.5], dim + 1).flatten(dim, dim + 1)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def downsample(x: torch.Tensor) -> torch.Tensor:
    """2x down: the [1,2,1] filter at stride 2, (x[2j-1] + 2 x[2j] + x[2j+1]) / 4 (0 before the
    start), along H and W, as elementwise passes (see `upsample`)."""
    for dim in (2, 3):
        even, odd = x.unfold(dim, 2, 2).unbind(-1)
        x = even * 0.5 + (odd + _shift(odd, dim, 1)) * 0.25
    return x


class LowPass(nn.Module):
    """2x resampling with the separable [1,2,1] filter: up (interpolates, keeping the samples) or
    down. As a depthwise (transposed) convolution, except down on a GPU: there `downsample`, the
    same function, whose second derivative (R1 through D) is elementwise too. Measured with
    `bench/step_profile.py --kernels` (bench/RESULTS.md): on an H100 that is the fastest modern
    step; on a CPU oneDNN's convolutions are faster both ways. `upsample` is the elementwise up."""

    def __init__(self, up: bool):
        super().__init__()
        self.up = up
        k = torch.tensor([1.0, 2.0, 1.0])
        k = torch.outer(k, k)
        self.register_buffer("kernel", (k / k.sum() * (4 if up else 1)).view(1, 1, 3, 3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return downsample(x) if x.is_cuda and not self.up else self.conv(x)

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        """The resampling as a depthwise (transposed) convolution with the [1,2,1] filter."""
        c = x.shape[1]
        kernel = self.kernel.to(x.dtype).expand(c, 1, 3, 3)
        if self.up:
            return F.conv_transpose2d(x, kernel, stride=2, padding=1, output_padding=1, groups=c)
        return F.conv2d(x, kernel, stride=2, padding=1, groups=c)


def _stage(channels: int, blocks: int, expansion: int, group_width: int, total: int) -> list[nn.Module]:
    return [Block(channels, expansion, group_width, total) for _ in range(blocks)]


class Generator(GeneratorNet):
    """z [B,z_dim] -> image [B,3,R,R], about [-1,1] (not squashed)."""

    def __init__(self, resolution: int = 64, z_dim: int = 64, width: int = 64, blocks: int = 2,
                 expansion: int = 2, group_width: int = 16):
        super().__init__()
        if min(blocks, expansion, group_width) < 1:
            raise ValueError(f"r3gan generator: blocks={blocks}, expansion={expansion} and "
                             f"group_width={group_width} must be at least 1")
        self.resolution, self.z_dim, self.width = resolution, z_dim, width
        widths = stage_widths(resolution, width)  # 4x4 first
        total = blocks * len(widths)
        self.basis = nn.Parameter(torch.randn(widths[0], 4, 4))
        self.scale = _he(nn.Linear(z_dim, widths[0], bias=False))
        layers: list[nn.Module] = _stage(widths[0], blocks, expansion, group_width, total)
        for cin, cout in zip(widths, widths[1:]):
            if cin != cout:
                layers.append(_he(Conv2d(cin, cout, 1, bias=False)))
            layers += [LowPass(up=True), *_stage(cout, blocks, expansion, group_width, total)]
        self.body = nn.Sequential(*layers)
        self.to_rgb = _he(Conv2d(widths[-1], 3, 1, bias=False))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        unconditional(c, self)
        x = self.basis.unsqueeze(0) * self.scale(z.flatten(1)).view(z.shape[0], -1, 1, 1)  # [B,C,4,4]
        return self.to_rgb(self.body(x))


class Discriminator(DiscriminatorNet):
    """image [B,3,R,R] -> logits [B]."""

    def __init__(self, resolution: int = 64, width: int = 64, blocks: int = 2, expansion: int = 2,
                 group_width: int = 16):
        super().__init__()
        if min(blocks, expansion, group_width) < 1:
            raise ValueError(f"r3gan discriminator: blocks={blocks}, expansion={expansion} and "
                             f"group_width={group_width} must be at least 1")
        self.resolution, self.width = resolution, width
        widths = stage_widths(resolution, width)[::-1]  # full resolution first
        total = blocks * len(widths)
        layers: list[nn.Module] = [_he(Conv2d(3, widths[0], 1, bias=False))]
        for cin, cout in zip(widths, widths[1:]):
            layers += [*_stage(cin, blocks, expansion, group_width, total), LowPass(up=False)]
            if cin != cout:
                layers.append(_he(Conv2d(cin, cout, 1, bias=False)))
        layers += _stage(widths[-1], blocks, expansion, group_width, total)
        self.body = nn.Sequential(*layers)
        self.basis = _he(nn.Conv2d(widths[-1], widths[-1], 4, groups=widths[-1], bias=False))  # 4x4 -> 1x1
        self.linear = _he(nn.Linear(widths[-1], 1, bias=False))
        self.feature_dim = widths[-1]

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        unconditional(c, self)
        return self.head(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, feature_dim]: the depthwise 4x4 conv's output, what the last linear map reads."""
        h = self.body(x)  # [B,C,4,4]
        # The depthwise 4x4 conv on a 4x4 map, as a weighted sum: PyTorch computes a depthwise
        # conv's second derivative (R1) channel by channel.
        return (h * self.basis.weight.squeeze(1)).sum((2, 3))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).flatten()
