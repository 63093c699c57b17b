"""The run's networks and optimizers, built from the config's specs and prepared by Accelerate."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from facegan import networks
from facegan.networks import exports
from facegan.training.config import TrainConfig
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


def build_models(cfg: TrainConfig, acc: Accelerator, resolution: int,
                 condition: dict[str, float] | None = None) -> Models:
    """G and D from their specs (warm-started when asked), Adam for each, EMA-G, torch.compile.
    `condition` ({attribute: training frequency}) makes them conditional."""
    set_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts them)
    g_spec, d_spec = cfg.network_specs(resolution, condition)
    g, d = networks.build("generator", g_spec), networks.build("discriminator", d_spec)
    if cfg.warm_start_g:
        exports.warm_start(g, cfg.warm_start_g, "generator")
    if cfg.warm_start_d:
        exports.warm_start(d, cfg.warm_start_d, "discriminator")
    if cfg.channels_last:
        g, d = networks.to_channels_last(g), networks.to_channels_last(d)
    fused = cfg.fused_adam or None  # None lets torch pick its default (foreach)
    opt_g = torch.optim.Adam(g.parameters(), cfg.lr_g, betas=(cfg.beta1, cfg.beta2), fused=fused)
    opt_d = torch.optim.Adam(d.parameters(), cfg.lr_d, betas=(cfg.beta1, cfg.beta2), fused=fused)
    # One prepare call: save_state/load_state rely on this order.
    g, d, opt_g, opt_d = acc.prepare(g, d, opt_g, opt_d)
    ema = EMA(acc.unwrap_model(g)) if cfg.ema else None  # fed from the unwrapped G once per step
    if cfg.compile != "off":  # in place: parameter names, checkpoints and exports are unchanged
        # Start from an empty compile cache, as a resumed run in a new process does: graphs
        # left by an earlier train() in this process would make this one differ numerically.
        torch._dynamo.reset()
        for net in (g, d):
            acc.unwrap_model(net).compile(mode=cfg.compile)
    return Models(g, d, opt_g, opt_d, ema, acc)
