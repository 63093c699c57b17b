"""Path-length regularisation (StyleGAN2, Karras et al. 2020): a fixed-size step in W should
move the image by a fixed amount, whatever the w. For a random image-space direction y (pixel
noise scaled by 1/sqrt(H x W)), the length |J_w^T y| of the generator's Jacobian product is
pulled towards its running mean `pl_mean` (a buffer of the style generator, so it is saved and
a resume continues it exactly). Lazy: every `every` G steps, weighted `every` times, on half a
batch of new latents, as StyleGAN2 does. Needs a style generator (stylegan2)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from facegan.training.losses import Terms


class PathLength:
    def __init__(self, weight: float, every: int = 4, decay: float = 0.01):
        self.weight, self.every, self.decay = weight, every, decay

    def due(self, step: int) -> bool:
        """Whether G step `step` (counted from 0) runs the penalty."""
        return step % self.every == 0

    def terms(self, g: torch.nn.Module, z: torch.Tensor, c: torch.Tensor,
              mean_over_ranks: Callable[[torch.Tensor], torch.Tensor]) -> Terms:
        """`g`: the unwrapped style generator; z [N, z_dim] and c [N, K] what its mapping takes."""
        ws = g.map(z, c, update=False)[:, None].expand(-1, g.num_ws, -1)  # [N,num_ws,w_dim]
        images = g.synthesis(ws)
        direction = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
        (grads,) = torch.autograd.grad((images * direction).sum(), ws, create_graph=True)
        lengths = grads.float().square().sum(2).mean(1).sqrt()  # [N]
        with torch.no_grad():  # every rank the same mean, so every rank keeps the same buffer
            g.pl_mean.copy_(g.pl_mean.lerp(mean_over_ranks(lengths.mean().detach()), self.decay))
        penalty = (lengths - g.pl_mean).square().mean()
        return Terms(penalty * self.weight * self.every, {"reg/pl": penalty.detach()})
