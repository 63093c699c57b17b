"""torch-fidelity's VGG16 feature extractor (fc2 after ReLU, 4096 dimensions): the features of
precision and recall (Kynkaanniemi et al. 2019), which torch-fidelity computes with torchvision's
ImageNet VGG16 weights (IMAGENET1K_V1, `vgg16-397923af.pth`).

As with Inception: the standard file is fetched into torch's hub cache on a machine with internet,
or passed by path (`--vgg16-weights`); any other file of the same architecture is accepted (tests
use a random stand-in), and every precision and recall it produces says it is not standard.
"""

from __future__ import annotations

import functools
import sys
from contextlib import redirect_stdout
from pathlib import Path
from unittest import mock

import torch
import torchvision
from torch_fidelity import feature_extractor_vgg16 as tf_vgg

from facegan.metrics.inception import read_weights, save_weights, weights_sha256

FEATURE = "fc2_relu"  # torch-fidelity's layer for precision and recall
STANDARD_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1
STANDARD_SHA256_PREFIX = "397923af"  # torch hub's hash prefix in the name
FLAG = "--vgg16-weights"


class VGGWeightsError(ValueError):
    """A weights file that is missing or is not torchvision's VGG16."""


def default_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / STANDARD_FILE


def _build(weights: dict | None) -> tf_vgg.FeatureExtractorVGG16:
    """torch-fidelity's extractor around a torchvision VGG16 holding `weights` (random where None),
    without touching the global RNG (module init draws from it)."""

    def vgg16(**_):
        if weights is None:
            return torchvision.models.vgg16()
        with torch.device("meta"):  # no random init of 138M parameters only to overwrite them
            module = torchvision.models.vgg16()
        module.load_state_dict(weights, assign=True)
        return module

    with mock.patch.object(tf_vgg, "torchvision_load_pretrained_vgg16", vgg16), redirect_stdout(sys.stderr), \
            torch.random.fork_rng(devices=[]):
        return tf_vgg.FeatureExtractorVGG16("vgg16", [FEATURE])


@functools.lru_cache(maxsize=1)
def _expected_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        module = torchvision.models.vgg16()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def read_vgg16(weights: str | Path | None, needed_by: str) -> tuple[Path, dict]:
    """(resolved path, state dict) of torchvision VGG16 weights: the file given, or the standard
    one from torch hub's cache, downloaded there first where it is missing (internet needed)."""
    if weights is None:
        path = default_weights_path()
        if not path.is_file():
            try:
                torchvision.models.vgg16(weights=torchvision.models.VGG16_Weights.IMAGENET1K_V1)
            except Exception as err:  # noqa: BLE001
                raise VGGWeightsError(
                    f"{needed_by} needs VGG16 weights, and the standard ones could not be downloaded "
                    f"({type(err).__name__}); on an offline machine pass {FLAG} PATH to a copy of "
                    f"{STANDARD_FILE}") from None
        weights = path
    path = Path(weights).resolve()
    return path, read_weights(path, FLAG, _expected_shapes(), "torchvision VGG16", VGGWeightsError)


class VGG16:
    """The extractor and a description of its weights, like `inception.Inception`."""

    dim = 4096

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu"):
        self.path, state = read_vgg16(weights, "precision/recall")
        self.module = _build(state).to(device)
        self.sha256 = weights_sha256(self.path)
        self.standard = self.sha256.startswith(STANDARD_SHA256_PREFIX)
        self.device = torch.device(device)

    def describe(self) -> dict:
        return {"vgg16_weights": str(self.path), "vgg16_weights_sha256": self.sha256,
                "vgg16_standard_weights": self.standard}

    # The extractor protocol (facegan.metrics.extractors).
    kinds = ("vgg16",)

    def dims(self) -> dict[str, int]:
        return {"vgg16": self.dim}

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"vgg16": self(images)}

    def resize(self) -> str:
        return "VGG16 224"

    def rows_source(self, kind: str) -> str:
        return "vgg-rows"  # the name from before one vocabulary: rows cached then are still found

    def note(self) -> str | None:
        return None if self.standard else ("not the standard VGG16 weights: precision and recall here are not "
                                           "comparable to published ones")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,3,H,W] -> float32 [B,4096]; torch-fidelity resizes to 224 itself."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"VGG16 takes uint8 [B,3,H,W] images, got {images.dtype} {list(images.shape)}")
        (features,) = self.module(images.to(self.device, non_blocking=True))
        return features.float()


def make_standin_weights(path: str | Path, seed: int = 0) -> Path:
    """A randomly initialised torchvision VGG16 (Kaiming on every conv and linear layer), for tests
    and offline benchmarks. Its precision and recall are NOT comparable to published ones, and
    facegan reports them as non-standard."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = torchvision.models.vgg16()
        for layer in module.modules():
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
                torch.nn.init.zeros_(layer.bias)
    return save_weights(module, path)
