"""LPIPS (Zhang et al. 2018), the perceptual distance of projection: the `lpips` package's VGG
variant, whose linear heads (calibrated on human judgements of 64x64 patches) ship inside the
package, on a VGG16 trunk read from torchvision's standard ImageNet file (`vgg16-397923af.pth`,
the one precision/recall use: found in torch hub's cache, downloaded there, or given with
`--vgg16-weights`). With any other file of that architecture (tests use a random stand-in) every
distance is reported as non-standard.

Images are compared at 64x64, the patch size LPIPS was calibrated on, or at their own size between
64 and 256 px (StyleGAN2-ADA's projector compares at 256: larger images are reduced by area
averaging first). Differentiable: projection descends it.
"""

from __future__ import annotations

import sys
from contextlib import redirect_stdout
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
import torchvision

from facegan.metrics.inception import weights_sha256
from facegan.metrics.vgg import STANDARD_SHA256_PREFIX, read_vgg16

MIN_SIZE, MAX_SIZE = 64, 256


def _vgg16_with(state: dict):
    """A stand-in for torchvision.models.vgg16 that lpips calls: the trunk holds `state`, built
    on the meta device first (no random init of 138M parameters only to overwrite them)."""

    build = torchvision.models.vgg16  # lpips reaches it as torchvision.models.vgg16, which is patched

    def vgg16(**_):
        with torch.device("meta"):
            module = build()
        module.load_state_dict(state, assign=True)
        return module

    return vgg16


class LPIPS:
    """`distance(a, b)`: LPIPS-VGG between images in [-1, 1], [B,3,H,W] -> [B]."""

    def __init__(self, vgg16_weights: str | Path | None = None, device: str | torch.device = "cpu"):
        import lpips  # and scipy: only projection needs them
        import lpips.pretrained_networks

        self.path, state = read_vgg16(vgg16_weights, "the perceptual distance (LPIPS-VGG)")
        self.sha256 = weights_sha256(self.path)
        self.standard = self.sha256.startswith(STANDARD_SHA256_PREFIX)
        with redirect_stdout(sys.stderr), mock.patch.object(lpips.pretrained_networks.tv, "vgg16", _vgg16_with(state)):
            # lpips' calibrated heads load from its package (pretrained=True is about them)
            model = lpips.LPIPS(net="vgg", pretrained=True, verbose=False)
        self.model = model.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)

    def describe(self) -> dict:
        return {"lpips": "vgg v0.1", "vgg16_weights": str(self.path), "vgg16_weights_sha256": self.sha256,
                "vgg16_standard_weights": self.standard}

    @staticmethod
    def size_for(resolution: int) -> int:
        return min(max(resolution, MIN_SIZE), MAX_SIZE)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """[-1,1] float images at the size LPIPS compares them at."""
        size = self.size_for(images.shape[-1])
        if images.shape[-1] > size:
            return F.interpolate(images, size=(size, size), mode="area")
        if images.shape[-1] < size:
            return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return images

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The trunk's unit-normalised features of [-1,1] images: compute a target's once."""
        from lpips import normalize_tensor

        x = self.model.scaling_layer(self.prepare(images.float()))
        return [normalize_tensor(f) for f in self.model.net(x)]

    def distance_to(self, images: torch.Tensor, target: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS of each image to the target whose `features` are given, [B]."""
        heads = self.model.lins
        return sum(head((f - t).square()).mean((1, 2, 3)) for head, f, t in zip(heads, self.features(images), target))

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.distance_to(a, self.features(b))
