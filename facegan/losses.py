"""GAN objectives on D's logits. Softplus / BCE-with-logits only: autocast-safe, unlike
Sigmoid + BCELoss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


# D's loss is split in a real and a fake term, each backpropagated right after its own forward:
# two D forwards before one backward break BatchNorm under DDP.
def d_real_loss(kind: str, real_logits: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label))
    if kind == "hinge":
        return F.relu(1 - real_logits).mean()
    return F.softplus(-real_logits).mean()


def d_fake_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    if kind == "hinge":
        return F.relu(1 + fake_logits).mean()
    return F.softplus(fake_logits).mean()


def g_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """G's loss: the non-saturating form for bce/nonsat, -D(G(z)) for hinge."""
    if kind == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()  # == BCE-with-logits against label 1


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al.): squared gradient norm of D's logits w.r.t. real images."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.float().square().sum(dim=(1, 2, 3)).mean()
