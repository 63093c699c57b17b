"""DINOv2 ViT-S/B/L-14 features (the CLS token after the last norm), as torch-fidelity 0.4's
`dinov2-vit-*-14` extractors give them: FD-DINOv2 and precision/recall in DINOv2 space.

Stein et al. (NeurIPS 2023) found Inception-space metrics disagree with human judgement of
generated images and recommend the Frechet distance in DINOv2 ViT-L/14 space instead.

torch-fidelity builds DINOv2 with `torch.hub.load("facebookresearch/dinov2", ...)`, which runs the
repository's code from GitHub and refuses a weights path. facegan builds the same network itself
(Meta's `DinoVisionTransformer` as its hub entry points configure it: LayerScale, LayerNorm eps
1e-6, the 518 px position embedding interpolated bicubically with the 0.1 offset, no registers)
and loads Meta's weights file with `weights_only=True`, so nothing but the weights comes from
outside. Preprocessing is torch-fidelity's: uint8 -> float, its TF1-compatible bilinear resize to
224 (not dgm-eval's bicubic), ImageNet normalisation. `bench/dinov2_parity.py` checks the network
against Meta's code.

Weights: `dinov2_vitl14_pretrain.pth` (and the s/b files), fetched into torch's hub cache by
`torch.hub` (as torch-fidelity and Meta's hub code do), or given by path. A file counts as
Meta's by its content, as Inception's and VGG16's do: its sha256 must be the one PINNED_SHA256
holds for the model. Meta publishes no checksum, and this project's machines cannot download the
files to take one, so none is pinned yet: every file is read, its values are recorded as
`_nonstandard` ("unverified"), and every record carries its sha256, so two results can be checked
for the same file. A file's name proves nothing (anything can be saved as Meta's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from facegan.metrics.inception import read_weights, save_weights, weights_sha256
from facegan.metrics.registry import DINOV2_MODELS

FLAG = "--dinov2-weights"
URL = "https://dl.fbaipublicfiles.com/dinov2"
INPUT_SIZE = 224  # torch-fidelity's FeatureExtractorDinoV2.INPUT_IMAGE_SIZE
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, on 0..1


@dataclass(frozen=True)
class Arch:
    hub: str  # Meta's hub name: dinov2_vitl14
    dim: int
    depth: int
    heads: int


# torch-fidelity's names, in registry.DINOV2_MODELS (which the config checks without importing
# torch); dinov2-vit-g-14 uses a SwiGLU FFN and is not built here.
MODELS = dict(zip(DINOV2_MODELS, (Arch("dinov2_vits14", 384, 12, 6), Arch("dinov2_vitb14", 768, 12, 12),
                                  Arch("dinov2_vitl14", 1024, 24, 16))))
# sha256 of Meta's `*_pretrain.pth` file of each model, once someone who has the files (downloaded
# from Meta's URL) takes it: `sha256sum dinov2_vitl14_pretrain.pth`. Values of a file not listed
# here stay `_nonstandard`.
PINNED_SHA256: dict[str, str] = {}
DEFAULT = "dinov2-vit-l-14"  # Stein et al.'s choice; ViT-B/14 is about 4x cheaper during training
PATCH, GRID = 14, 37  # 518 px / 14: the grid the position embedding was trained at
OFFSET = 0.1  # Meta's interpolate_offset


class DINOv2WeightsError(ValueError):
    """A weights file that is missing or is not Meta's DINOv2 of the model asked for."""


def parse_model(name: str, flag: str = "--dinov2-model") -> str:
    if name not in MODELS:
        extra = " (ViT-g/14 is not built by facegan)" if name == "dinov2-vit-g-14" else ""
        raise ValueError(f"{flag} {name}: unknown{extra}; choose from {', '.join(MODELS)}")
    return name


def standard_file(model: str) -> str:
    return f"{MODELS[model].hub}_pretrain.pth"


def default_weights_path(model: str) -> Path:
    """Where torch.hub keeps Meta's file once downloaded."""
    return Path(torch.hub.get_dir()) / "checkpoints" / standard_file(model)


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale (Meta's NestedTensorBlock on a plain tensor)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ls1 = nn.Module()
        self.ls1.gamma = nn.Parameter(torch.ones(dim))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.ls2 = nn.Module()
        self.ls2.gamma = nn.Parameter(torch.ones(dim))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.attn.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).unbind(2)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.attn.proj(out.transpose(1, 2).reshape(b, n, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1.gamma * self.attention(self.norm1(x))
        return x + self.ls2.gamma * self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class ViT(nn.Module):
    """DINOv2's backbone; forward gives the normalised CLS token (its hub models' output). Its
    state dict has the keys of Meta's `*_pretrain.pth` files."""

    def __init__(self, arch: Arch):
        super().__init__()
        dim = arch.dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, PATCH, PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, GRID * GRID + 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # (training only: kept for the keys)
        self.blocks = nn.ModuleList(Block(dim, arch.heads) for _ in range(arch.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self._positions: dict[tuple[int, int], torch.Tensor] = {}

    def positions(self, h: int, w: int) -> torch.Tensor:
        """The position embedding for an h x w patch grid, as Meta's interpolate_pos_encoding
        makes it (bicubic, scale factors (h+0.1)/37 and (w+0.1)/37), kept per grid."""
        if (h, w) not in self._positions:
            pos = self.pos_embed.float()
            if (h, w) != (GRID, GRID):
                grid = pos[:, 1:].reshape(1, GRID, GRID, -1).permute(0, 3, 1, 2)
                grid = F.interpolate(grid, scale_factor=((h + OFFSET) / GRID, (w + OFFSET) / GRID), mode="bicubic",
                                     antialias=False)
                pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)
            self._positions[(h, w)] = pos.to(self.pos_embed.dtype)
        return self._positions[(h, w)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(x)
        h, w = x.shape[-2:]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        x = x + self.positions(h, w)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


def _expected_shapes(model: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        module = ViT(MODELS[model])
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def read_dinov2(weights: str | Path | None, model: str) -> tuple[Path, dict]:
    """(resolved path, state dict): the file given, or Meta's from torch hub's cache, downloaded
    there first where it is missing (internet needed)."""
    if weights is None:
        path = default_weights_path(model)
        if not path.is_file():
            url = f"{URL}/{MODELS[model].hub}/{standard_file(model)}"
            try:
                torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001
                raise DINOv2WeightsError(
                    f"{model} needs Meta's weights, and they could not be downloaded ({type(err).__name__}); on "
                    f"an offline machine pass {FLAG} PATH to a copy of {standard_file(model)} ({url})") from None
        weights = path
    path = Path(weights).resolve()
    return path, read_weights(path, FLAG, _expected_shapes(model), f"DINOv2 {model}", DINOv2WeightsError)


class DINOv2:
    """The extractor and a description of its weights, like `inception.Inception`."""

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu",
                 model: str = DEFAULT):
        self.model_name = parse_model(model)
        self.dim = MODELS[model].dim
        self.path, state = read_dinov2(weights, model)
        with torch.device("meta"):
            module = ViT(MODELS[model])
        module.load_state_dict(state, assign=True)
        self.module = module.to(device).eval().requires_grad_(False)
        self.sha256 = weights_sha256(self.path)
        self.standard = PINNED_SHA256.get(model) == self.sha256  # by content, never by name
        self.device = torch.device(device)
        self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255

    def describe(self) -> dict:
        return {"dinov2_model": self.model_name, "dinov2_weights": str(self.path),
                "dinov2_weights_sha256": self.sha256, "dinov2_standard_weights": self.standard}

    # The extractor protocol (facegan.metrics.extractors).
    kinds = ("dinov2",)

    def dims(self) -> dict[str, int]:
        return {"dinov2": self.dim}

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"dinov2": self(images)}

    def resize(self) -> str:
        return f"{self.model_name} {INPUT_SIZE}"

    def rows_source(self, kind: str) -> str:
        return f"{self.model_name}-rows"  # the model too: ViT-S/B/L rows differ in width

    def note(self) -> str | None:
        return None if self.standard else (
            f"DINOv2 weights not verified as Meta's {self.model_name} (their sha256 {self.sha256[:12]} is not "
            "pinned): FD-DINOv2 (and precision/recall in DINOv2 space) here are not comparable to published ones")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,3,H,W] -> float32 [B,dim], through torch-fidelity's resize and normalisation."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"DINOv2 takes uint8 [B,3,H,W] images, got {images.dtype} {list(images.shape)}")
        x = images.to(self.device, non_blocking=True).float()
        x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(INPUT_SIZE, INPUT_SIZE), align_corners=False)
        return self.module((x - self.mean) / self.std).float()


def make_standin_weights(path: str | Path, model: str = "dinov2-vit-s-14", seed: int = 0) -> Path:
    """A random DINOv2 of Meta's layout, for tests and offline benchmarks: truncated-normal (0.02)
    linear layers and position embedding as Meta's init, LayerScale 1 (a random net with Meta's
    1e-5 would pass images through almost unchanged). Its values are NOT comparable to published
    ones, and facegan records them as non-standard, whatever the file is named."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = ViT(MODELS[parse_model(model)])
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        nn.init.kaiming_normal_(module.patch_embed.proj.weight, mode="fan_in")
        nn.init.trunc_normal_(module.pos_embed, std=0.02)
        nn.init.normal_(module.cls_token, std=1e-6)
    return save_weights(module, path)
