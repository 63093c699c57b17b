"""Projection: the latent whose image matches a target face, found as StyleGAN2-ADA's projector
finds it (Karras et al. 2020, section 5 and projector.py), in pure PyTorch.

- A style G (stylegan2): start at the mean w of `w_samples` mapped z, optimise w (`w`: one w for
  every layer; `w+`: one per layer) and every layer's noise map with Adam (betas 0.9, 0.999).
  The lr ramps up over the first 5% of the steps and down (cosine) over the last 25%; w gets
  Gaussian noise of 0.05 x W's standard deviation, fading out over the first 75% of the steps
  (quadratically), so the search looks around before it settles; the noise maps are pulled
  towards white noise (their autocorrelation at every scale down to 8x8, weight 1e5) and
  renormalised after each step, so they cannot learn the image.
- Another arch (no W): the same on z, from z = 0, with noise of 0.05 x z's unit std.

The distance is LPIPS-VGG (metrics/perceptual.py) alone, as in StyleGAN2-ADA; the pixel MSE is
reported beside it. Images are in [-1, 1]; MSE is reported on [0, 1] pixels.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from facegan.metrics.perceptual import LPIPS
from facegan.networks import sampling
from facegan.networks.common import attributes, no_attributes
from facegan.progress import progress_bar

SPACES = ("w", "w+", "z")


@dataclass(frozen=True)
class ProjectOptions:
    steps: int = 1000  # Adam steps (StyleGAN2-ADA's default)
    space: str = "w"  # w, w+ (a style G) or z (any G)
    lr: float = 0.1  # the peak learning rate
    lr_rampup: float = 0.05  # fraction of the steps the lr ramps up over
    lr_rampdown: float = 0.25  # fraction of the steps it ramps down over (cosine)
    noise_factor: float = 0.05  # initial noise on the latent, times the latent space's std
    noise_ramp: float = 0.75  # fraction of the steps that noise fades out over
    noise_reg: float = 1e5  # weight of the noise maps' regularisation (style G)
    mse_weight: float = 0.0  # weight of a pixel MSE term beside LPIPS (StyleGAN2-ADA: none)
    w_samples: int = 10000  # z mapped to find W's mean and std
    frames: int = 40  # images kept along the way (for the progress GIF)
    seed: int = 0


@dataclass
class Projection:
    latent: torch.Tensor  # [num_ws, w_dim] for w and w+, [z_dim] for z
    space: str
    noise: list[torch.Tensor]  # a style G's noise maps [1,1,r,r], one per synthesis layer
    image: torch.Tensor  # [3,R,R] in [-1,1]
    frames: list[torch.Tensor] = field(default_factory=list)  # uint8 [3,R,R]
    lpips: float = math.nan
    mse: float = math.nan  # on [0,1] pixels

    def tensors(self) -> dict[str, torch.Tensor]:
        """What a latent file holds: `w` or `z`, and `noise.i`."""
        out = {"z" if self.space == "z" else "w": self.latent.detach().cpu().contiguous()}
        out.update({f"noise.{i}": n.detach().cpu().contiguous() for i, n in enumerate(self.noise)})
        return out


def check_space(g: torch.nn.Module, space: str) -> None:
    """One line where the space does not fit the generator."""
    if space not in SPACES:
        raise ValueError(f"--space {space!r}: expected one of {', '.join(SPACES)}")
    arch = getattr(g, "spec", {}).get("arch", type(g).__name__)
    if space != "z" and g.space != "w":
        raise ValueError(f"--space {space}: the generator ({arch}) has no W space; use --space z")
    if space == "z" and attributes(g):
        raise ValueError(f"--space z: the generator ({arch}) is conditional, and its z alone does not make a face; "
                         "project a conditional style generator in W")


@torch.no_grad()
def w_statistics(g: torch.nn.Module, samples: int, seed: int) -> tuple[torch.Tensor, float]:
    """(mean w [w_dim], W's std: the root mean squared distance of w from it) over mapped z (with
    attributes drawn at their training frequencies, for a conditional G)."""
    w = sampling.mapped_w(g, samples, seed)
    mean = w.mean(0)
    return mean, float((w - mean).square().sum(1).mean().sqrt())


def noise_regularisation(noise: list[torch.Tensor]) -> torch.Tensor:
    """Squared autocorrelation of each noise map at one pixel's shift, at every scale to 8x8."""
    loss = noise[0].new_zeros(())
    for n in noise:
        while True:
            loss = loss + (n * n.roll(1, 3)).mean().square() + (n * n.roll(1, 2)).mean().square()
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return loss


def learning_rate(options: ProjectOptions, step: int) -> float:
    t = step / options.steps
    ramp = min(1.0, (1 - t) / options.lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return options.lr * ramp * min(1.0, t / options.lr_rampup)


def project(g: torch.nn.Module, target: torch.Tensor, lpips: LPIPS, options: ProjectOptions = ProjectOptions(),
            progress: bool = True, label: str = "projecting") -> Projection:
    """`target` [3,R,R] in [-1,1] at G's resolution."""
    check_space(g, options.space)
    g = copy.deepcopy(g).eval().requires_grad_(False)  # the noise maps are swapped below
    device = next(g.parameters()).device
    target = target[None].to(device, torch.float32)
    with torch.no_grad():
        target_features = lpips.features(target)
    gen = torch.Generator().manual_seed(options.seed)
    noise: list[torch.Tensor] = []
    if options.space == "z":
        start, std = torch.zeros(1, g.z_dim), 1.0
    else:
        mean, std = w_statistics(g, options.w_samples, options.seed)
        copies = g.num_ws if options.space == "w+" else 1
        start = mean.cpu()[None].repeat(copies, 1)
        for layer in g.layers:  # each layer's fixed noise becomes a variable, white to start with
            noise.append(torch.randn(layer.noise_const.shape, generator=gen).to(device).requires_grad_(True))
            layer.noise_const = noise[-1]
    latent = start.to(device).requires_grad_(True)
    opt = torch.optim.Adam([latent, *noise], betas=(0.9, 0.999), lr=options.lr)

    def render(x: torch.Tensor) -> torch.Tensor:
        if options.space == "z":  # (an unconditional G: check_space refuses z for a conditional one)
            return g(x, no_attributes(x))
        return g.synthesis(x.expand(g.num_ws, -1)[None])

    frames, every = [], max(1, options.steps // max(options.frames, 1))
    bar = progress_bar(options.steps, label, unit="step", enabled=progress, leave=False)
    for step in range(options.steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(options, step)
        scale = std * options.noise_factor * max(0.0, 1 - step / (options.steps * options.noise_ramp)) ** 2
        jitter = torch.randn(latent.shape, generator=gen).to(device) * scale
        image = render(latent + jitter)
        dist = lpips.distance_to(image, target_features).sum()
        loss = dist + options.mse_weight * ((image - target) / 2).square().mean()
        if noise:
            loss = loss + options.noise_reg * noise_regularisation(noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for n in noise:
                n -= n.mean()
                n *= n.square().mean().rsqrt()
        if step % every == 0:
            frames.append(sampling.to_uint8(image.detach()[0]).cpu())
        bar.update()
        bar.set_postfix(lpips=f"{dist.item():.4f}", refresh=False)
    bar.close()
    with torch.no_grad():
        image = render(latent).float()
        distance = float(lpips.distance_to(image, target_features)[0])
        mse = float(((image - target) / 2).square().mean())
    frames.append(sampling.to_uint8(image[0]).cpu())
    final = latent.detach().cpu()
    final = final[0] if options.space == "z" else final.expand(g.num_ws, -1).clone()
    return Projection(final, options.space, [n.detach().cpu() for n in noise], image[0].cpu(), frames, distance, mse)


@torch.no_grad()
def read_latent(path: str | Path, g: torch.nn.Module, key: str) -> dict[str, torch.Tensor]:
    """A latent file's tensors (`z`, or `w` and a projection's `noise.i`), checked against `g`:
    the tensor `key` is there, every tensor has the shape `g` takes and finite values. One
    ValueError naming the file otherwise (a missing file, another format, another model's latent)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--latent {path}: no such file")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors' own error types for a file of another format
        raise ValueError(f"--latent {path}: not a latent file of facegan.project ({type(e).__name__})") from None
    if key not in tensors:
        raise ValueError(f"--latent {path}: holds no {key} (it has {', '.join(sorted(tensors)) or 'nothing'}); was it "
                         "projected into this generator, in this space?")
    problem = _latent_problem(tensors, g)
    if problem:
        raise ValueError(f"--latent {path}: {problem}; it was not projected into this generator")
    return tensors


def _latent_problem(tensors: dict[str, torch.Tensor], g: torch.nn.Module) -> str | None:
    """What does not fit `g` in a latent file's tensors, or None."""
    wanted = {"z": [(g.z_dim,), (1, g.z_dim)]}
    if g.space == "w":
        wanted["w"] = [(g.w_dim,), (g.num_ws, g.w_dim)]
        wanted.update({f"noise.{i}": [tuple(layer.noise_const.shape)] for i, layer in enumerate(g.layers)})
    for name, tensor in tensors.items():
        if name not in wanted:
            return f"{name} is no latent of this generator (it takes {', '.join(wanted)})"
        if tuple(tensor.shape) not in wanted[name]:
            shapes = " or ".join(str(list(shape)) for shape in wanted[name])
            return f"{name} has shape {list(tensor.shape)}, this generator takes {shapes}"
        if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
            return f"{name} is not all finite floating-point numbers"
    return None


def render_latent(g: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The image [1,3,R,R] in [-1,1] of a latent file's tensors: `z`, or `w` ([w_dim]: every layer's,
    or [num_ws, w_dim]) with the noise maps `noise.i` where it has them (a projection's)."""
    device = next(g.parameters()).device
    if "z" in tensors:  # (an unconditional G's: a conditional one is projected in W)
        z = tensors["z"].reshape(1, g.z_dim).to(device)
        with sampling.evaluating(g):
            return g(z, no_attributes(z))
    if any(k.startswith("noise.") for k in tensors):
        g = copy.deepcopy(g)
        for i, layer in enumerate(g.layers):
            if f"noise.{i}" in tensors:
                layer.noise_const = tensors[f"noise.{i}"].to(device)
    w = tensors["w"].to(device)
    with sampling.evaluating(g):
        return g.synthesis(w[None])  # [1,w_dim] (every layer's) or [1,num_ws,w_dim]
