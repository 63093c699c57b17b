"""Adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"): every image D sees, real or fake, goes through a differentiable
augmentation pipeline whose strength p follows D's overfitting.

- `augment(x, p)`: each transform applies to each image independently with probability p:
  x-flip, a 90-degree rotation, an integer translation (up to 1/8 of the size, reflected
  borders), then brightness, contrast, hue rotation and saturation as one 3x3 colour matrix plus
  offset per image. All are differentiable in x: G learns through them, and R1 is taken w.r.t.
  the un-augmented images.
- `AdaController`: r_t = E[sign(D(real))], summed over `interval` D steps on every rank; then
  p += sign(r_t - target) x (images of those steps) / (kimg x 1000), clamped to [0, 1]. So p can
  go from 0 to 1 in `kimg` thousand images.

Random draws use torch's global RNG (restored on resume, per rank), like facegan.training.augment.
Pure tensors: devices and ranks are the training loop's (it passes `reduce`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

# StyleGAN2-ADA's strengths ("bgc" pipeline): translation up to 1/8 of the size, brightness
# N(0, 0.2), contrast lognormal(0, 0.5 ln 2), hue rotation uniform in (-pi, pi), saturation
# lognormal(0, ln 2).
TRANSLATE, BRIGHTNESS_STD, CONTRAST_STD, SATURATION_STD = 0.125, 0.2, 0.5 * math.log(2), math.log(2)
LUMA = torch.tensor([1.0, 1.0, 1.0]) / math.sqrt(3)  # the grey axis that hue rotates around


def _chosen(b: int, p: float, device: torch.device) -> Tensor:
    """[B] bool: which images a transform applies to."""
    return torch.rand(b, device=device) < p


def _flip_rotate(x: Tensor, p: float) -> Tensor:
    b = x.shape[0]
    flip = _chosen(b, p, x.device).view(b, 1, 1, 1)
    x = torch.where(flip, x.flip(3), x)
    turns = torch.randint(0, 4, (b,), device=x.device) * _chosen(b, p, x.device)  # 0: no rotation
    if x.shape[2] == x.shape[3]:
        x = torch.stack([torch.rot90(x, k, (2, 3)) for k in range(4)])[turns, torch.arange(b, device=x.device)]
    return x


def _translate(x: Tensor, p: float) -> Tensor:
    """Integer shifts up to TRANSLATE x size in each direction, borders reflected."""
    b, _, h, w = x.shape
    on = _chosen(b, p, x.device)
    dy = (torch.randint(-int(h * TRANSLATE), int(h * TRANSLATE) + 1, (b,), device=x.device) * on).view(b, 1, 1)
    dx = (torch.randint(-int(w * TRANSLATE), int(w * TRANSLATE) + 1, (b,), device=x.device) * on).view(b, 1, 1)

    def reflect(i: Tensor, n: int) -> Tensor:  # indices into [0, n) with mirrored borders
        i = i.remainder(2 * n - 2)
        return torch.where(i >= n, 2 * n - 2 - i, i)

    rows = reflect(torch.arange(h, device=x.device).view(1, h, 1) - dy, h)  # [B,H,1]
    cols = reflect(torch.arange(w, device=x.device).view(1, 1, w) - dx, w)  # [B,1,W]
    index = (rows * w + cols).view(b, 1, h * w).expand(-1, x.shape[1], -1)
    return x.flatten(2).gather(2, index).view_as(x)


def _colour(x: Tensor, p: float) -> Tensor:
    """Brightness, contrast, hue and saturation as one per-image 3x3 matrix M and offset o:
    x -> M x + o on the RGB vector of every pixel (images in [-1,1], grey at 0)."""
    b, dev = x.shape[0], x.device
    eye = torch.eye(3, device=dev).expand(b, 3, 3)
    v = LUMA.to(dev)
    vv = torch.outer(v, v)
    offset = torch.randn(b, device=dev) * BRIGHTNESS_STD * _chosen(b, p, dev)
    contrast = torch.exp(torch.randn(b, device=dev) * CONTRAST_STD * _chosen(b, p, dev))
    theta = (torch.rand(b, device=dev) * 2 - 1) * math.pi * _chosen(b, p, dev)
    cross = torch.tensor([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]], device=dev)
    hue = (vv + torch.cos(theta).view(b, 1, 1) * (eye - vv) + torch.sin(theta).view(b, 1, 1) * cross)  # Rodrigues
    saturation = torch.exp(torch.randn(b, device=dev) * SATURATION_STD * _chosen(b, p, dev))
    saturate = vv + saturation.view(b, 1, 1) * (eye - vv)
    matrix = (contrast.view(b, 1, 1) * saturate @ hue).to(x.dtype)  # [B,3,3]
    y = torch.einsum("bij,bjhw->bihw", matrix, x[:, :3])
    return y + (contrast * offset).view(b, 1, 1, 1).to(x.dtype)


def augment(x: Tensor, p: float) -> Tensor:
    """The ADA pipeline at strength p on images [B,3,H,W]; p = 0 returns x itself (no draws)."""
    if p <= 0:
        return x
    return _colour(_translate(_flip_rotate(x, p), p), p)


class AdaController:
    """p and its update rule; `state()` / `load()` carry it through checkpoints exactly."""

    def __init__(self, target: float = 0.6, kimg: float = 100.0, interval: int = 4, p: float = 0.0):
        self.target, self.kimg, self.interval = target, kimg, interval
        self.p, self.rt = p, None
        self.sign_sum: Tensor | float = 0.0  # sum of per-batch mean signs since the last update (this rank)
        self.batches: int = 0  # batches behind sign_sum (this rank)

    def observe(self, sign_mean: Tensor) -> None:
        """One batch's mean sign of D's real logits (a device scalar; no host sync)."""
        self.sign_sum = self.sign_sum + sign_mean.detach().double()
        self.batches += 1

    def update(self, step: int, step_nimg: int, reduce: Callable[[Tensor], Tensor], device: torch.device) -> None:
        """After G step `step`: every `interval` steps, move p from the batches seen (all ranks)."""
        if step % self.interval:
            return
        sums = reduce(self._totals(device)).tolist()  # [sign sum, batches] over ranks
        self.sign_sum, self.batches = 0.0, 0
        if sums[1] == 0:
            return
        self.rt = sums[0] / sums[1]
        direction = (self.rt > self.target) - (self.rt < self.target)  # sign(r_t - target): -1, 0 or 1
        self.p = min(max(self.p + direction * self.interval * step_nimg / (self.kimg * 1000), 0.0), 1.0)

    def _totals(self, device: torch.device) -> Tensor:
        """[sign sum, batches] of this rank, float64 on `device` (sign_sum is a float after a reset)."""
        return torch.stack([torch.as_tensor(self.sign_sum, dtype=torch.float64, device=device),
                            torch.tensor(float(self.batches), dtype=torch.float64, device=device)])

    def state(self, reduce: Callable[[Tensor], Tensor], device: torch.device, main: bool) -> dict:
        """What a checkpoint keeps (every rank calls it). The pending sums of all ranks go to the
        main process's record, and this rank keeps them too only if main: so a resumed run and
        an unbroken one add up the same totals at the next update."""
        sums = reduce(self._totals(device)).tolist()
        self.sign_sum, self.batches = (sums[0], int(sums[1])) if main else (0.0, 0)
        return {"p": self.p, "rt": self.rt, "sign_sum": sums[0], "batches": int(sums[1])}

    def load(self, state: dict, main: bool) -> None:
        self.p, self.rt = state["p"], state["rt"]
        self.sign_sum, self.batches = (state["sign_sum"], state["batches"]) if main else (0.0, 0)
