"""A generator loaded for use: `facegan.load_generator(path)` and `G.generate(n, seed=, psi=)`.

    import facegan
    G = facegan.load_generator("runs/celeba/generator.safetensors")   # on the GPU where there is one
    images = G.generate(16, seed=0, psi=0.7)     # uint8 [16, 3, R, R]; psi: a style generator's truncation
    images = G.generate(16, attributes={"Smiling": 1})                # a conditional generator

The same seed gives the same images as `python -m facegan.sample --seed` (latents drawn on the
CPU from their own generator; G in eval mode, noise fixed), on any device up to float rounding.
"""

from __future__ import annotations

from pathlib import Path

import torch

from facegan.networks import sampling
from facegan.networks.common import attributes as attribute_names
from facegan.networks.exports import load_generator as load_export


class Generator:
    """An exported generator with what it was trained with (`meta`: spec, step, data)."""

    def __init__(self, module: torch.nn.Module, meta: dict):
        self.module, self.meta = module.eval(), meta
        self.resolution, self.z_dim = module.resolution, module.z_dim
        self.attributes = attribute_names(module)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device: str | torch.device) -> Generator:
        self.module.to(device)
        return self

    def generate(self, n: int, seed: int = 0, psi: float | None = None, truncation: float | None = None,
                 attributes: dict[str, int] | None = None, batch_size: int = 64) -> torch.Tensor:
        """uint8 images [n, 3, R, R] on the CPU. `psi` truncates in W (a style generator), `truncation`
        redraws z beyond +-T (any); a conditional generator's `attributes` not given are drawn at
        their training frequencies."""
        if n < 1:
            raise ValueError(f"n={n}: must be at least 1")
        sampling.check_psi(self.module, psi, "this generator")
        z = sampling.latents(n, self.z_dim, seed, truncation)
        if attributes and not self.attributes:
            raise ValueError("attributes: this generator is not conditional (trained without --condition)")
        text = ",".join(f"{k}={int(v)}" for k, v in (attributes or {}).items())
        fixed = sampling.parse_settings(text, self.attributes, "attributes")
        attrs = sampling.draw(self.module.frequencies, n, torch.Generator().manual_seed(seed + 1), fixed)  # [n, K]
        return torch.cat([b.cpu() for b in sampling.generate_uint8(self.module, z, batch_size, attrs, psi)])


def load_generator(path: str | Path, device: str | torch.device | None = None) -> Generator:
    """The exported generator at `path` (.safetensors with its spec), on `device` (default: the GPU
    where there is one, else the CPU)."""
    module, meta = load_export(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Generator(module, meta).to(device)
