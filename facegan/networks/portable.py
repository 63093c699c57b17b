"""A generator that loads with torch alone: a `torch.export` program (.pt2), no facegan needed.

    import torch
    G = torch.export.load("generator.pt2").module()   # a program is code: only one you made or trust
    images = G(torch.randn(16, z_dim))            # uint8 [16, 3, R, R]
    images = G(torch.randn(16, z_dim), attrs)     # a conditional generator: attrs [16, K], 0/1 floats

The program is G in eval mode (BatchNorm's running statistics, a style G's fixed noise) with its
output turned into uint8 pixels as facegan's samples are, truncation `psi` baked in when given,
and a dynamic batch size (1 to 4096). Its JSON sidecar states the signature: z_dim, the
attributes in order, resolution, psi, the source export and the program's sha256.

A program is code, not only weights: `torch.export.load` unpickles any weight a program marks
as pickled, so a tampered .pt2 runs what it likes when loaded. Load only programs you
made or trust (check the sha256 against the .json's), and share the .safetensors export, which
holds tensors alone, where the other side has facegan.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from facegan.files import sha256_file, write_json_atomic, writing
from facegan.networks import sampling
from facegan.networks.common import attributes

MAX_BATCH = 4096
TRUST = ("a .pt2 program is code (torch.export.load unpickles what it marks as pickled): load only programs you made "
         "or trust, checked against the sha256 in its .json; share the .safetensors where the other side has facegan")


class UInt8Sampler(torch.nn.Module):
    """G's images as uint8 [B,3,R,R] (rounded as torchvision's save_image), psi fixed."""

    def __init__(self, g: torch.nn.Module, psi: float | None = None):
        super().__init__()
        self.g, self.psi = g, psi

    def forward(self, z: torch.Tensor, attrs: torch.Tensor | None = None) -> torch.Tensor:
        """The program's signature: z alone for an unconditional G (as its .json says), z and attrs
        for a conditional one."""
        kwargs = {} if self.psi is None else {"psi": self.psi}
        return sampling.to_uint8(self.g(z, sampling.condition(z, attrs), **kwargs))


def export_program(g: torch.nn.Module, path: str | Path, psi: float | None = None, source: str = "") -> dict:
    """Write `path` (.pt2) and its .json; returns the signature written."""
    sampling.check_psi(g, psi)
    g = g.eval()
    names = attributes(g)
    module = UInt8Sampler(g, psi).eval()
    device = next(g.parameters()).device
    z = torch.zeros(2, g.z_dim, device=device)
    example = (z, torch.zeros(2, len(names), device=device)) if names else (z,)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    shapes = {"z": {0: batch}, "attrs": {0: batch}} if names else {"z": {0: batch}}
    with torch.no_grad():
        program = torch.export.export(module, example, dynamic_shapes=shapes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:  # whole or not at all: a full disk leaves no half program under the real name
        with writing(path):
            torch.export.save(program, str(tmp))
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    signature = {"format": "torch.export program (torch.export.load(path).module())",
                 "inputs": ["z [B, z_dim] float32"] + (["attrs [B, K] float32 0/1, in `attributes` order"]
                                                     if names else []),
                 "output": "uint8 [B, 3, resolution, resolution]", "z_dim": g.z_dim, "attributes": names,
                 "resolution": g.resolution, "psi": psi, "max_batch": MAX_BATCH, "torch": torch.__version__,
                 "source": source, "sha256": sha256_file(path), "trust": TRUST}
    write_json_atomic(path.with_suffix(".json"), signature)
    return signature
