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


class GeneratorNet(nn.Module):
    """The one way to call a generator: `G(z, c)` -> images [B,3,R,R] in [-1,1], for z [B,z_dim]
    and c [B,K] 0/1 attributes in the order of `attributes` (K = 0, a zero-width c, for an
    unconditional G; c may then be left out). `space` names the latent space truncation and edits
    work in: "w" for a style generator, which also offers `map(z, c, psi=1, update=True)` -> w
    [B,w_dim] and `synthesis(ws)` (ws [B,w_dim] or [B,num_ws,w_dim]), with `num_ws`, `w_dim`,
    `w_avg` and its synthesis `layers`; "z" for the others. Every arch's Generator and the
    conditional wrapper declare these: nothing needs to probe for them."""

    space = "z"
    attributes: tuple[str, ...] = ()
    frequencies: tuple[float, ...] = ()


class DiscriminatorNet(nn.Module):
    """The one way to call a discriminator: `D(x, c)` -> logits [B], c as G's (zero-width, or
    left out, for an unconditional D)."""

    attributes: tuple[str, ...] = ()


def unconditional(c: torch.Tensor | None, net: nn.Module) -> None:
    """An unconditional network takes a zero-width c (or none); anything else is a caller's error."""
    if c is not None and c.shape[-1]:
        raise ValueError(f"{type(net).__module__}.{type(net).__name__} is unconditional: c must be [B, 0], "
                         f"got {list(c.shape)}")


def no_attributes(z: torch.Tensor) -> torch.Tensor:
    """The zero-width c [B, 0] of an unconditional network, on z's device."""
    return z.new_zeros(z.shape[0], 0)


def attributes(net: nn.Module) -> list[str]:
    """The attributes a network is conditioned on, in order ([] for an unconditional one)."""
    return list(net.attributes)


def has_batchnorm(module: nn.Module) -> bool:
    """Whether any layer is a BatchNorm (which couples the samples of a batch: wgan-gp's
    per-sample gradient penalty is then wrong, so the loop refuses the pair)."""
    kinds = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    return any(isinstance(m, kinds) for m in module.modules())


def to_channels_last(module: nn.Module) -> nn.Module:
    """NHWC weights; an arch whose layers need exceptions defines its own `to_channels_last()`."""
    own = getattr(module, "to_channels_last", None)
    return own() if callable(own) else module.to(memory_format=torch.channels_last)
