"""One training step: D phase(s), then the G phase, with gradient accumulation over micro-batches,
the learning-rate schedules, the EMA update and running statistics.

Each phase runs the loss's passes (one D forward each) and backpropagates right after each one.
Every backward runs under DDP's no_sync; each phase then averages its gradients across ranks in
one all-reduce, as StyleGAN2-ADA does. So a gradient penalty's double backward, several passes
and several micro-batches all sync exactly once, in any order, and no DDP buffer broadcast can
modify a tensor that a pending backward still needs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import torch
import torch.distributed as dist
from accelerate import Accelerator

from facegan.networks.common import no_attributes
from facegan.training.ada import AdaController, augment
from facegan.training.augment import diffaugment
from facegan.training.ema import ema_beta
from facegan.training.health import Health
from facegan.training.losses import GANLoss, Pass
from facegan.training.models import Models
from facegan.training.path_length import PathLength
from facegan.training.schedules import Schedule
from facegan.training.state import UNBOUNDED, AnnealPlan, RunState


class Stats:
    """Running sums per key on the device, read only when logging: no per-step host sync. The
    counts stay on the host: every rank adds the same keys at the same steps."""

    def __init__(self, device: torch.device):
        self.device, self.sums, self.counts = device, {}, {}

    def add(self, logs: dict[str, torch.Tensor]) -> None:
        for key, value in logs.items():
            value = value.detach().double().reshape(())
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1

    def take(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """Mean of each key since the last call, over every rank (`reduce` sums across ranks)."""
        keys = sorted(self.sums)
        if not keys:
            return {}
        counts = torch.tensor([float(self.counts[k]) for k in keys], dtype=torch.float64, device=self.device)
        totals = reduce(torch.stack([torch.stack([self.sums[k] for k in keys]), counts], dim=1)).tolist()
        self.sums.clear()
        self.counts.clear()
        return {k: total / max(count, 1.0) for k, (total, count) in zip(keys, totals)}


@dataclass(frozen=True)
class StepOptions:
    """What a step takes of the run's config (facegan.training.loop.make_step fills it in)."""

    batch_size: int  # per process and micro-batch
    schedules: dict[str, Schedule]  # "g" and "d": each network's learning rate
    accumulate: int = 1  # micro-batches per optimizer step
    d_steps: int = 1  # D steps per G step
    diffaugment: tuple[str, ...] = ()  # DiffAugment's policy (facegan.training.augment)
    ema_kimg: float = 10.0  # EMA half-life
    ema_rampup: float = 0.05  # EMA ramp-up (facegan.training.ema)
    cuda_graphs: bool = False  # torch.compile's reduce-overhead mode: mark each step's start


class GANStep:
    """Calling it runs one G step and `d_steps` D steps on `d_steps x accumulate` real batches.
    `ada` (ADA's controller) and `health` (the watch over the losses) are the step's to update."""

    def __init__(self, acc: Accelerator, models: Models, loss: GANLoss, options: StepOptions,
                 ada: AdaController | None = None, health: Health | None = None,
                 path_length: PathLength | None = None):
        """`path_length`: a style G's lazy path-length regularisation, its own G phase when due."""
        self.acc, self.m, self.loss, self.options, self.ada = acc, models, loss, options, ada
        self.path_length = path_length
        self.health = health if health is not None else Health(acc.device)
        self.stats = Stats(acc.device)
        self.z_dim = acc.unwrap_model(models.g).z_dim
        self.optimizers = {"g": models.opt_g, "d": models.opt_d}

    def step_nimg(self) -> int:
        """Real images one step shows D, all ranks together."""
        o = self.options
        return o.batch_size * o.accumulate * o.d_steps * self.acc.num_processes

    def set_learning_rates(self, nimg: int, total_nimg: int, anneal: AnnealPlan | None = None) -> None:
        """`anneal`: a plan of --lr-decay-minutes, which decays from its start to `total_nimg`;
        before it, a run that only the clock ends (UNBOUNDED) stays at the warmed-up base lr."""
        for net, schedule in self.options.schedules.items():
            if anneal is not None:
                schedule = dataclasses.replace(schedule, decay_kimg=anneal.decay_kimg)
            lr = schedule.lr(nimg, math.inf if total_nimg >= UNBOUNDED else total_nimg)
            for group in self.optimizers[net].param_groups:
                group["lr"] = lr

    def learning_rates(self) -> dict[str, float]:
        """What the optimizers use now (logged as lr/G and lr/D)."""
        return {"lr/G": self.m.opt_g.param_groups[0]["lr"], "lr/D": self.m.opt_d.param_groups[0]["lr"]}

    def __call__(self, batches: Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]], state: RunState) -> None:
        """`batches` yields real images [B,3,H,W] in [-1,1], or (images, attributes [B,K] 0/1) for
        a conditional run; `state` is the run's (it reads total_nimg and advances step and nimg).
        A conditional run's fakes take the attributes of the real batch beside them, so G learns
        the data's joint distribution of attributes and D compares real and fake images under the
        same attributes."""
        o, m = self.options, self.m
        if o.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs may be reused
        self.set_learning_rates(state.nimg, state.total_nimg, state.anneal)
        for k in range(o.d_steps):
            reals, attrs = _split([next(batches) for _ in range(o.accumulate)])
            # One draw for all micro-batches: the same z as one batch of B x accumulate.
            zs = torch.randn(sum(len(r) for r in reals), self.z_dim, device=reals[0].device).split(
                [len(r) for r in reals])
            # With one micro-batch, the last D step's fakes keep their graph for the G step (one G
            # forward fewer); with several, the G step regenerates them from the same z, one
            # micro-batch at a time, so only one micro-batch's activations are held.
            keep = o.accumulate == 1 and k == o.d_steps - 1
            with torch.set_grad_enabled(keep), self._no_sync(m.g):
                fakes = [self._g(z, a) for z, a in zip(zs, attrs)]  # [B,3,H,W] in [-1,1]
            d_step = state.step * o.d_steps + k  # counts D steps, for lazy regularisation
            d_logs = self._phase(m.d, m.opt_d, [
                (lambda real=real, fake=fake, a=a, d_step=d_step: self.loss.d_passes(
                    self._d_given(a), real, fake.detach(), d_step))
                for real, fake, a in zip(reals, fakes, attrs)])
            self.stats.add(d_logs)
            if self.ada is not None:
                self.ada.observe(d_logs["sign/real"])
        m.d.requires_grad_(False)  # D is frozen during the G step: no D gradients, nothing to sync
        g_logs = self._phase(m.g, m.opt_g, [
            (lambda real=real, z=z, fake=fake, a=a: self.loss.g_passes(
                self._d_given(a), real, fake if keep else self._g(z, a), state.step))
            for real, z, fake, a in zip(reals, zs, fakes, attrs)])
        self.stats.add(g_logs)
        if self.path_length is not None and self.path_length.due(state.step):
            self.stats.add(self._path_length_phase(reals, attrs))
        m.d.requires_grad_(True)
        state.step += 1
        state.nimg += self.step_nimg()
        if self.ada is not None:  # every ada_interval steps: one all-rank sum and a host read
            self.ada.update(state.step, self.step_nimg(), lambda t: self.acc.reduce(t, "sum"), self.acc.device)
        if m.ema is not None:
            beta = ema_beta(self.step_nimg(), state.nimg, o.ema_kimg, o.ema_rampup)
            m.ema.update(self.acc.unwrap_model(m.g), beta)
        self.health.observe(state.step, {**d_logs, **g_logs})

    def _path_length_phase(self, reals: list[torch.Tensor], cs: list[torch.Tensor]) -> dict:
        """Path-length regularisation on half a micro-batch of new latents (StyleGAN2's shrink
        of 2), the attributes of the real images beside them for a conditional G: its own
        optimizer step, as StyleGAN2's lazy Greg phase."""
        g = self.acc.unwrap_model(self.m.g)
        n = max(1, len(reals[0]) // 2)
        z = torch.randn(n, self.z_dim, device=reals[0].device)
        mean = (lambda t: self.acc.reduce(t, "mean")) if self.acc.num_processes > 1 else (lambda t: t)
        return self._phase(self.m.g, self.m.opt_g, [lambda: [lambda: self.path_length.terms(g, z, cs[0][:n], mean)]])

    def _g(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.m.g(z, c)

    def _d(self, images: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """D's logits [B] on augmented images (DiffAugment's policy, or ADA at its current p),
        under the attributes c (no augmentation changes them)."""
        images = diffaugment(images, self.options.diffaugment)
        if self.ada is not None:
            images = augment(images, self.ada.p)
        return self.m.d(images, c)

    def _d_given(self, c: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """D as the losses call it, images -> logits, with the micro-batch's attributes bound."""
        return functools.partial(self._d, c=c)

    def aug_logs(self) -> dict[str, float]:
        """aug/p and aug/rt (the last r_t that moved p) when ADA is on."""
        if self.ada is None:
            return {}
        return {"aug/p": self.ada.p, **({"aug/rt": self.ada.rt} if self.ada.rt is not None else {})}

    def _no_sync(self, *nets: torch.nn.Module) -> ExitStack:
        stack = ExitStack()
        for net in nets:
            stack.enter_context(self.acc.no_sync(net))
        return stack

    def _phase(self, net: torch.nn.Module, opt: torch.optim.Optimizer,
               micro_batches: list[Callable[[], list[Pass]]]) -> dict[str, torch.Tensor]:
        """Every pass of every micro-batch, backward after each, then one gradient all-reduce and
        the optimizer step. Returns the logs summed over passes, averaged over micro-batches."""
        opt.zero_grad(set_to_none=True)
        logs: dict[str, torch.Tensor] = {}
        n = len(micro_batches)
        for passes_of in micro_batches:
            with self._no_sync(self.m.g, self.m.d):
                for run in passes_of():
                    terms = run()
                    self.acc.backward(terms.loss / n)
                    for key, value in terms.logs.items():
                        logs[key] = logs[key] + value / n if key in logs else value / n
        self._average_gradients(net)
        opt.step()
        return logs

    def _average_gradients(self, net: torch.nn.Module) -> None:
        """One all-reduce of the flattened gradients (what DDP would do, bucket by bucket)."""
        world = self.acc.num_processes
        if world == 1:
            return
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def _split(items: list) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Micro-batches of images, or of (images, attributes) -> (images, c): the attributes, or the
    zero-width c of an unconditional run (the loader's batches adapted to G(z, c) and D(x, c))."""
    if items and isinstance(items[0], tuple):
        return [i[0] for i in items], [i[1] for i in items]
    return items, [no_attributes(i) for i in items]
