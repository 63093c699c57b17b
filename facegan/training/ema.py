"""Exponential moving average of G, with a half-life in images and StyleGAN2's ramp-up.

A fixed decay from step 0 (0.999) averages in the random init and samples flat grey for the first
thousand steps; the ramp caps the half-life at `rampup` x the images seen so far, so early on the
EMA follows G closely.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(batch_nimg: int, cur_nimg: int, ema_kimg: float, rampup: float | None) -> float:
    """Decay for one update after `batch_nimg` more images: the EMA halves its lag every ema_kimg."""
    ema_nimg = ema_kimg * 1000
    if rampup:
        ema_nimg = min(ema_nimg, cur_nimg * rampup)
    return 0.5 ** (batch_nimg / max(ema_nimg, 1e-8))


class EMA(nn.Module):
    """A frozen copy of `source` (state_dict keys "module.<name>") moved towards it by `update`."""

    def __init__(self, source: nn.Module):
        super().__init__()
        self.module = copy.deepcopy(source).requires_grad_(False)  # keeps source's train/eval mode

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, source: nn.Module, beta: float) -> None:
        """p_ema = beta * p_ema + (1 - beta) * p for parameters; buffers (BatchNorm stats) are copied."""
        ema_params, src_params = list(self.module.parameters()), list(source.parameters())
        if len(ema_params) != len(src_params):
            raise ValueError(f"EMA.update: source has {len(src_params)} parameters, the EMA {len(ema_params)}")
        if ema_params:
            torch._foreach_lerp_(ema_params, [p.detach() for p in src_params], 1.0 - beta)
        for b_ema, b in zip(self.module.buffers(), source.buffers()):
            b_ema.copy_(b)
