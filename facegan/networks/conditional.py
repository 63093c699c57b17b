"""Conditioning on K binary attributes, for any registered arch.

- `ConditionalGenerator`: the arch's generator built for z_dim + K inputs, fed z concatenated
  with the attributes as +-1. Every arch's first layer is linear in its input (DCGAN's 4x4
  transposed conv, ResNet's linear map, R3GAN's per-channel scale of its 4x4 basis), so this is
  a learned embedding of the attributes added to that layer's output.
- `ProjectionDiscriminator`: the projection discriminator (Miyato & Koyama 2018) for several
  binary attributes: D(x, y) = head(phi(x)) + sum_k s_k <v_k, phi(x)>, with s_k = +1 where
  attribute k is true and -1 where false, phi(x) the arch's last features (`features`) and
  head its last layer (`head`). With one class per attribute value this is Miyato & Koyama's
  <embed(y), phi(x)> summed over attributes, up to a term independent of y that head absorbs.
  The v_k start at zero: D starts as the unconditional one.

Pure modules, like the archs: no devices, precision, distribution or files.
"""

from __future__ import annotations

import torch
from torch import nn

from facegan.networks.common import DiscriminatorNet, GeneratorNet, to_channels_last


def signs(attrs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B,K] 0/1 attributes -> [B,K] -1/+1."""
    return attrs.to(dtype) * 2 - 1


class ConditionalGenerator(GeneratorNet):
    """(z [B,z_dim], c [B,K] 0/1) -> images [B,3,R,R]; a style generator's `map(z, c)` and
    `synthesis(ws)` too, where the arch's G is one (its W space is the conditional G's)."""

    def __init__(self, base: nn.Module, attributes: list[str], frequencies: list[float]):
        super().__init__()
        self.net = base
        self.attributes, self.frequencies = list(attributes), list(frequencies)
        self.z_dim = base.z_dim - len(self.attributes)  # the noise part of the input
        self.resolution = base.resolution
        self.space = base.space

    def forward(self, z: torch.Tensor, c: torch.Tensor, **kwargs) -> torch.Tensor:
        """`kwargs` go to the arch's G (a style G's `psi`)."""
        return self.net(self.inputs(z, c), **kwargs)

    def inputs(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """What the arch's G takes: z and the attributes' signs, [B, z_dim + K]."""
        if c.shape != (z.shape[0], len(self.attributes)):
            raise ValueError(f"attrs of shape {tuple(c.shape)}: expected [{z.shape[0]}, {len(self.attributes)}] "
                             f"({', '.join(self.attributes)})")
        return torch.cat([z.flatten(1), signs(c, z.dtype)], 1)

    # A style generator's interface, where the arch's G is one.
    def map(self, z: torch.Tensor, c: torch.Tensor, psi: float = 1.0, update: bool = True) -> torch.Tensor:
        return self.net.map(self.inputs(z, c), None, psi, update)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        return self.net.synthesis(ws)

    @property
    def num_ws(self) -> int:
        return self.net.num_ws

    @property
    def w_dim(self) -> int:
        return self.net.w_dim

    @property
    def w_avg(self) -> torch.Tensor:
        return self.net.w_avg

    @property
    def pl_mean(self) -> torch.Tensor:
        return self.net.pl_mean

    @property
    def layers(self) -> nn.ModuleList:
        return self.net.layers

    def to_channels_last(self) -> ConditionalGenerator:
        """The arch's own NHWC conversion where it has one (DCGAN keeps its first layer's layout)."""

        self.net = to_channels_last(self.net)
        return self


class ProjectionDiscriminator(DiscriminatorNet):
    """(images [B,3,R,R], c [B,K] 0/1) -> logits [B]."""

    def __init__(self, base: nn.Module, attributes: list[str]):
        super().__init__()
        for name in ("features", "head", "feature_dim"):
            if not hasattr(base, name):
                raise ValueError(f"{type(base).__module__}.Discriminator has no {name!r}: a projection "
                                 "discriminator needs features(x), head(features) and feature_dim")
        self.net = base
        self.attributes = list(attributes)
        self.resolution = base.resolution
        self.embed = nn.Parameter(torch.zeros(len(self.attributes), base.feature_dim))  # v_k, one row each

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        phi = self.net.features(x)  # [B,F]
        if c.shape[0] != phi.shape[0]:  # a real+fake pair in one forward shares the batch's attributes
            c = c.repeat(phi.shape[0] // c.shape[0], 1)
        projection = (phi * (signs(c, phi.dtype) @ self.embed.to(phi.dtype))).sum(1)
        return self.net.head(phi) + projection
