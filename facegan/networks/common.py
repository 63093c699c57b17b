"""What every architecture and the registry share: the resolutions, stage widths, and a few
questions asked of any network. The bottom of the networks wing: it imports none of it."""

from __future__ import annotations

import math

import torch
from torch import nn

RESOLUTIONS = (32, 64, 128, 256)  # 256: shapes tested, training not measured here (2-core CPU)


def stage_widths(resolution: int, width: int, cap: int = 8) -> list[int]:
    """Channels of the stages at 4, 8, ..., `resolution` px: `width` at full resolution, doubling
    at each halving up to `width x cap` (DCGAN's 512-256-128-64 at 64 px and width 64)."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution {resolution} is not supported; choose one of {RESOLUTIONS}")
    sizes = [4 * 2**i for i in range(int(math.log2(resolution)) - 1)]
    return [width * min(resolution // size, cap) for size in sizes]


def attributes(net: nn.Module) -> list[str]:
    """The attributes a network is conditioned on, in order ([] for an unconditional one)."""
    return list(getattr(net, "attributes", []))


def has_batchnorm(module: nn.Module) -> bool:
    """Whether any layer is a BatchNorm (which couples the samples of a batch: wgan-gp's
    per-sample gradient penalty is then wrong, so the loop refuses the pair)."""
    kinds = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    return any(isinstance(m, kinds) for m in module.modules())


def to_channels_last(module: nn.Module) -> nn.Module:
    """NHWC weights; an arch whose layers need exceptions defines its own `to_channels_last()`."""
    own = getattr(module, "to_channels_last", None)
    return own() if callable(own) else module.to(memory_format=torch.channels_last)
