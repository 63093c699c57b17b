"""The run's networks and optimizers, built from the config's specs and prepared by Accelerate."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from facegan import networks
from facegan.networks import exports
from facegan.training.ema import EMA


@dataclass
class Models:
    g: torch.nn.Module  # as prepared by Accelerate (DDP-wrapped on several processes)
    d: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: EMA | None
    acc: Accelerator

    @property
    def sampler(self) -> torch.nn.Module:
        """The generator to sample from: EMA-G when enabled."""
        return self.ema.module if self.ema is not None else self.acc.unwrap_model(self.g)

    def unwrapped(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        return self.acc.unwrap_model(self.g), self.acc.unwrap_model(self.d)


@dataclass(frozen=True)
class ModelOptions:
    """What building the networks and optimizers takes of the run's config (loop.make_models)."""

    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)  # Adam's, for both
    fused_adam: bool = True  # torch's fused Adam kernels
    channels_last: bool = True  # NHWC weights
    ema: bool = False  # keep an EMA of G
    compile: str = "off"  # torch.compile mode for G and D
    warm_start_g: str = ""  # an exported generator to start G from
    warm_start_d: str = ""  # an exported discriminator to start D from
    seed: int = 0  # of the initial weights (the same on every rank)


def build_models(acc: Accelerator, g_spec: dict, d_spec: dict, options: ModelOptions) -> Models:
    """G and D from their specs (warm-started when asked), Adam for each, EMA-G, torch.compile."""
    o = options
    set_seed(o.seed)  # same initial weights on every rank (DDP also broadcasts them)
    g, d = networks.build("generator", g_spec), networks.build("discriminator", d_spec)
    if o.warm_start_g:
        exports.warm_start(g, o.warm_start_g, "generator")
    if o.warm_start_d:
        exports.warm_start(d, o.warm_start_d, "discriminator")
    if o.channels_last:
        g, d = networks.to_channels_last(g), networks.to_channels_last(d)
    fused = o.fused_adam or None  # None lets torch pick its default (foreach)
    opt_g = torch.optim.Adam(g.parameters(), o.lr_g, betas=o.betas, fused=fused)
    opt_d = torch.optim.Adam(d.parameters(), o.lr_d, betas=o.betas, fused=fused)
    # One prepare call: save_state/load_state rely on this order.
    g, d, opt_g, opt_d = acc.prepare(g, d, opt_g, opt_d)
    ema = EMA(acc.unwrap_model(g)) if o.ema else None  # fed from the unwrapped G once per step
    if o.compile != "off":  # in place: parameter names, checkpoints and exports are unchanged
        # Start from an empty compile cache, as a resumed run in a new process does: graphs
        # left by an earlier train() in this process would make this one differ numerically.
        torch._dynamo.reset()
        for net in (g, d):
            acc.unwrap_model(net).compile(mode=o.compile)
    return Models(g, d, opt_g, opt_d, ema, acc)
