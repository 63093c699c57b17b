"""Attribute directions in a generator's latent space, and edits along them (InterFaceGAN: Shen
et al. 2020), labelled by facegan's attribute classifier instead of by hand.

fit: sample latents (w of a style G, z of the others), render them, let the classifier say which
images show each attribute, and fit a linear boundary per attribute (logistic regression, on 80%
of the samples; its accuracy on the other 20% is stored). The unit normal of a boundary is the
attribute's direction; `scale` is the std of the sampled latents along it, so an edit of +2 moves a
face two standard deviations towards the attribute. `condition_on` projects other attributes'
directions out of one (InterFaceGAN's conditional manipulation), so that adding glasses does not
also age a face where the two are correlated in the data.

apply: latent + sum over edits of strength x scale x direction, rendered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facegan.networks import sampling
from facegan.networks.common import no_attributes
from facegan.progress import progress_bar

HELD_OUT = 0.2  # fraction of the samples the boundaries are tested on
MIN_SHARE = 0.01  # an attribute shown by fewer of the samples (or by more than 1 - this) gets no direction


@dataclass
class Direction:
    vector: torch.Tensor  # unit [D]
    scale: float  # std of the samples along it
    accuracy: float  # held-out accuracy of the boundary
    majority: float  # held-out accuracy of always guessing the commoner verdict
    share: float  # fraction of the samples the classifier saw the attribute in
    conditioned_on: tuple[str, ...] = ()


def space_of(g: torch.nn.Module) -> str:
    """The latent space edits move in: W for a style generator, z for the others (unconditional
    only: a conditional G's z alone makes no face, and without W there is nowhere to edit it)."""
    if g.space == "z" and g.attributes:
        arch = getattr(g, "spec", {}).get("arch", type(g).__name__)
        raise ValueError(f"the generator ({arch}) is conditional and has no W space: edit a conditional style "
                         "generator (stylegan2), or use its attributes themselves (python -m facegan.sample --sweep)")
    return g.space


@torch.no_grad()
def sample_latents(g: torch.nn.Module, num: int, seed: int) -> torch.Tensor:
    """[num, D]: w (mapped from seeded z, with attributes at their frequencies for a conditional G) or z."""
    return sampling.mapped_w(g, num, seed) if space_of(g) == "w" else sampling.latents(num, g.z_dim, seed)


@torch.no_grad()
def render(g: torch.nn.Module, latents: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """uint8 images [N,3,R,R] of latents in G's edit space: w (every layer's), or z."""
    device = next(g.parameters()).device
    space = space_of(g)
    out = []
    with sampling.evaluating(g):
        for x in latents.split(batch_size):
            x = x.to(device)
            images = g.synthesis(x) if space == "w" else g(x, no_attributes(x))
            out.append(sampling.to_uint8(images).cpu())
    return torch.cat(out)


def check_classifier(g: torch.nn.Module, classifier_attributes: list[str], resolution: int, names: list[str],
                     what: str) -> list[int]:
    """The classifier's column of each name; one line for an unknown name or another resolution."""
    if resolution != g.resolution:
        raise ValueError(f"{what}: reads {resolution} px images, the generator makes {g.resolution} px; train one "
                         f"on {g.resolution} px shards")
    unknown = [n for n in names if n not in classifier_attributes]
    if unknown:
        raise ValueError(f"--attributes {unknown[0]!r}: {what} knows {', '.join(classifier_attributes)}")
    return [classifier_attributes.index(n) for n in names]


def logistic_boundary(x: torch.Tensor, y: torch.Tensor, steps: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [D], bias) of a logistic regression of y (0/1) on standardised x, by L-BFGS, with a
    small L2 penalty; the weight is given back in x's own units."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    xs = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(xs @ w + b, y) + 1e-3 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    weight = w.detach() / std
    return weight, b.detach() - (mean * weight).sum()


def fit(latents: torch.Tensor, verdicts: torch.Tensor, names: list[str], seed: int = 0) -> dict[str, Direction]:
    """Directions from latents [N,D] and the classifier's verdicts [N,K] (0/1) on their images."""
    order = torch.randperm(len(latents), generator=torch.Generator().manual_seed(seed))
    cut = int(len(order) * (1 - HELD_OUT))
    train, test = order[:cut], order[cut:]
    out = {}
    for k, name in enumerate(names):
        y = verdicts[:, k].float()
        share = float(y.mean())
        if not MIN_SHARE <= share <= 1 - MIN_SHARE:
            raise ValueError(f"{name}: the classifier sees it in {share:.1%} of {len(y)} generated faces, too few of "
                             "one kind to fit a boundary; sample more (--samples) or leave it out")
        weight, bias = logistic_boundary(latents[train], y[train])
        accuracy = float((((latents[test] @ weight + bias) > 0).float() == y[test]).float().mean())
        majority = max(float(y[test].mean()), 1 - float(y[test].mean()))
        vector = weight / weight.norm()
        out[name] = Direction(vector, float((latents @ vector).std()), accuracy, majority, share)
    return out


def condition(directions: dict[str, Direction], name: str, on: list[str]) -> Direction:
    """`name`'s direction with the span of `on`'s directions projected out, unit length again."""
    basis = torch.linalg.qr(torch.stack([directions[n].vector for n in on], 1)).Q  # [D, len(on)], orthonormal
    d = directions[name]
    v = d.vector - basis @ (basis.T @ d.vector)
    if v.norm() < 1e-6:
        raise ValueError(f"--condition-on: {name}'s direction lies in the span of {', '.join(on)}'s")
    v = v / v.norm()
    return Direction(v, d.scale, d.accuracy, d.majority, d.share, tuple(on))


@torch.no_grad()
def label(g: torch.nn.Module, classifier: torch.nn.Module, columns: list[int], samples: int, seed: int,
          batch_size: int = 250, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents [N,D], the classifier's 0/1 verdicts [N,K] on their images)."""
    latents = sample_latents(g, samples, seed)
    verdicts = []
    device = next(classifier.parameters()).device
    bar = progress_bar(samples, "labelling", enabled=progress, leave=False)
    for x in latents.split(batch_size):
        images = render(g, x, batch_size)
        verdicts.append((classifier(images.to(device))[:, columns] > 0).float().cpu())
        bar.update(len(x))
    bar.close()
    return latents, torch.cat(verdicts)


def edit(latents: torch.Tensor, directions: dict[str, Direction], strengths: dict[str, float]) -> torch.Tensor:
    """latents [N,D] (or [N,num_ws,D] of a projection: every layer moves) moved along the directions."""
    out = latents.clone()
    for name, alpha in strengths.items():
        d = directions[name]
        out = out + alpha * d.scale * d.vector.to(out.device, out.dtype)
    return out
