"""GAN objectives and their regularisers, as objects with a D phase and a G phase.

A phase returns *passes*: zero-argument callables that each run exactly one D forward and return
`Terms`. The training loop runs them in order and backpropagates each pass's loss right after it,
because two D forwards before one backward break BatchNorm under DDP. The loop, not the loss,
owns backward, gradient sync and augmentation (`d` is D(augment(x)), returning logits [B]).

Softplus / BCE-with-logits only: autocast-safe, unlike Sigmoid + BCELoss. Logits are cast to
float32 before any loss arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facegan.networks.common import has_batchnorm

D = Callable[[Tensor], Tensor]  # D(augment(x)) -> logits [B]


@dataclass
class Terms:
    loss: Tensor  # scalar to backpropagate: adversarial term + weighted regularisers of this pass
    logs: dict[str, Tensor]  # detached float scalars; the loop sums each key over a step's passes


Pass = Callable[[], Terms]


def real_sign(logits: Tensor) -> Tensor:
    """Mean sign of D's logits on real images, detached: ADA's r_t (StyleGAN2-ADA, eq. 1)."""
    return logits.detach().sign().mean()


def input_grad(logits: Tensor, x: Tensor) -> Tensor:
    """dD/dx per sample, flattened to [B, C*H*W] in float32; differentiable, for R1, R2 and GP."""
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    return grad.float().flatten(1)


class GANLoss:
    """Shared base: a real pass and a fake pass for D, one pass for G, and R1/R2.

    A subclass sets `name` and gives the adversarial terms on D's float32 logits. A loss that needs
    real and fake in one D forward (relativistic `rpgan`) overrides `d_passes` and `g_passes`.
    Every D phase logs `sign/real`, the mean sign of D's logits on real images: ADA's overfitting
    heuristic r_t.
    """

    name: str = ""
    critic: bool = False  # True: D's output is an unbounded score, logged raw; False: D(x) logs sigmoid probs
    needs_no_batchnorm: bool = False  # True: a per-sample gradient penalty that BatchNorm in D makes wrong
    # |loss/D| and |loss/G| no healthy run reaches (facegan.training.health's divergence guard): D's raw
    # scores are tens at most in hinge and lsgan runs, so a loss of 1,000 is far outside.
    plausible_loss: float = 1e3

    def __init__(self, *, r1_gamma: float = 0.0, r2_gamma: float = 0.0, reg_every: int = 1):
        if reg_every < 1 or r1_gamma < 0 or r2_gamma < 0:
            raise ValueError(f"loss {self.name!r}: reg_every={reg_every} must be at least 1 and "
                             f"r1_gamma={r1_gamma}, r2_gamma={r2_gamma} must not be negative")
        self.r1_gamma, self.r2_gamma, self.reg_every = r1_gamma, r2_gamma, reg_every

    # The adversarial terms, each the batch mean on float32 logits [B].
    def d_real(self, logits: Tensor) -> Tensor:
        raise NotImplementedError

    def d_fake(self, logits: Tensor) -> Tensor:
        raise NotImplementedError

    def g_fake(self, logits: Tensor) -> Tensor:
        raise NotImplementedError

    def score(self, logits: Tensor) -> Tensor:
        """What D(x) and D(G(z)) log: the mean probability, or the mean raw score of a critic."""
        return (logits if self.critic else torch.sigmoid(logits)).mean().detach()

    def check_discriminator(self, d: nn.Module) -> None:
        """Refuse a D this loss cannot train (one line): a per-sample gradient penalty needs
        per-sample outputs, which BatchNorm in D does not give."""
        if self.needs_no_batchnorm and has_batchnorm(d):
            raise ValueError(f"loss={self.name} cannot train a D with BatchNorm (its per-sample gradient penalty "
                             "needs per-sample outputs); turn it off (dcgan: --d-batchnorm false) or pick another loss")

    def regularise(self, step: int) -> tuple[bool, bool]:
        """Whether R1 and R2 run at D step `step` (lazily: every reg_every-th, scaled by reg_every)."""
        due = step % self.reg_every == 0
        return due and self.r1_gamma > 0, due and self.r2_gamma > 0

    def d_passes(self, d: D, real: Tensor, fake: Tensor, step: int) -> list[Pass]:
        r1, r2 = self.regularise(step)
        return [lambda: self.real_pass(d, real, r1), lambda: self.fake_pass(d, fake, r2)]

    def g_passes(self, d: D, real: Tensor, fake: Tensor, step: int) -> list[Pass]:
        """`real` is the micro-batch D last saw (only relativistic losses use it)."""

        def g_pass() -> Terms:
            loss = self.g_fake(d(fake).float())
            return Terms(loss, {"loss/G": loss.detach()})

        return [g_pass]

    def real_pass(self, d: D, real: Tensor, r1: bool) -> Terms:
        real = real.detach().requires_grad_(r1)  # R1 is the gradient w.r.t. the un-augmented input
        logits = d(real).float()
        adv = self.d_real(logits)
        terms = Terms(adv, {"loss/D": adv.detach(), "D(x)": self.score(logits), "sign/real": real_sign(logits)})
        if r1:
            self._zero_centred(terms, "reg/r1", logits, real, self.r1_gamma)
        self.extra_real(terms, logits)
        return terms

    def fake_pass(self, d: D, fake: Tensor, r2: bool) -> Terms:
        fake = fake.detach().requires_grad_(r2)
        logits = d(fake).float()
        adv = self.d_fake(logits)
        terms = Terms(adv, {"loss/D": adv.detach(), "D(G(z))": self.score(logits)})
        if r2:
            self._zero_centred(terms, "reg/r2", logits, fake, self.r2_gamma)
        return terms

    def extra_real(self, terms: Terms, logits: Tensor) -> None:
        """Hook for a regulariser on the real logits (wgan-gp's drift)."""

    def _zero_centred(self, terms: Terms, key: str, logits: Tensor, x: Tensor, gamma: float) -> None:
        """R1 (x real) or R2 (x fake) from D's logits on x."""
        self._add_zero_centred(terms, key, input_grad(logits, x).square().sum(1), gamma)

    def _add_zero_centred(self, terms: Terms, key: str, sq_norms: Tensor, gamma: float) -> None:
        """R1 or R2 from per-sample ||dD/dx||^2 [B]: their mean, weighted gamma/2 x reg_every as it
        runs lazily."""
        self._add(terms, key, sq_norms.mean(), gamma / 2 * self.reg_every)

    @staticmethod
    def _add(terms: Terms, key: str, penalty: Tensor, weight: float) -> None:
        terms.loss = terms.loss + weight * penalty
        terms.logs[key] = penalty.detach()


class BCE(GANLoss):
    """BCE-with-logits with one-sided label smoothing (real target `real_label`); G non-saturating."""

    name = "bce"
    # softplus of a logit: 100 means D's logits are 100 on the wrong side, its outputs pinned at 0 or 1
    plausible_loss = 100.0

    def __init__(self, *, real_label: float = 0.9, **kw):
        super().__init__(**kw)
        self.real_label = real_label

    def d_real(self, logits):
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, self.real_label))

    def d_fake(self, logits):
        return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))

    def g_fake(self, logits):
        return F.softplus(-logits).mean()


class NonSaturating(GANLoss):
    """Goodfellow et al.'s non-saturating loss in softplus form (StyleGAN2's)."""

    name = "nonsat"
    # softplus of a logit: 100 means D's logits are 100 on the wrong side, its outputs pinned at 0 or 1
    plausible_loss = 100.0

    def d_real(self, logits):
        return F.softplus(-logits).mean()

    def d_fake(self, logits):
        return F.softplus(logits).mean()

    def g_fake(self, logits):
        return F.softplus(-logits).mean()


class Hinge(GANLoss):
    """Hinge loss (SAGAN, BigGAN)."""

    name = "hinge"
    critic = True

    def d_real(self, logits):
        return F.relu(1 - logits).mean()

    def d_fake(self, logits):
        return F.relu(1 + logits).mean()

    def g_fake(self, logits):
        return -logits.mean()


class LSGAN(GANLoss):
    """Least squares (Mao et al.), targets 1 for real and 0 for fake."""

    name = "lsgan"
    critic = True

    def d_real(self, logits):
        return 0.5 * (logits - 1).square().mean()

    def d_fake(self, logits):
        return 0.5 * logits.square().mean()

    def g_fake(self, logits):
        return 0.5 * (logits - 1).square().mean()


class WGANGP(GANLoss):
    """WGAN-GP (Gulrajani et al.) with ProGAN's drift term: a third D pass on interpolates."""

    name = "wgan-gp"
    critic = True
    plausible_loss = 1e4  # a critic's scores are unbounded; the drift term keeps them in the hundreds
    needs_no_batchnorm = True  # BatchNorm mixes samples, so the per-sample gradient norm is wrong

    def __init__(self, *, gp_lambda: float = 10.0, drift: float = 1e-3, **kw):
        super().__init__(**kw)
        self.gp_lambda, self.drift = gp_lambda, drift

    def d_real(self, logits):
        return -logits.mean()

    def d_fake(self, logits):
        return logits.mean()

    def g_fake(self, logits):
        return -logits.mean()

    def extra_real(self, terms, logits):
        if self.drift > 0:  # keeps the critic's scores from drifting away from 0
            self._add(terms, "reg/drift", logits.square().mean(), self.drift)

    def d_passes(self, d, real, fake, step):
        return [*super().d_passes(d, real, fake, step), lambda: self.gp_pass(d, real, fake)]

    def gp_pass(self, d: D, real: Tensor, fake: Tensor) -> Terms:
        a = torch.rand([real.shape[0]] + [1] * (real.ndim - 1), device=real.device, dtype=real.dtype)
        mixed = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)  # [B,C,H,W]
        norm = torch.linalg.vector_norm(input_grad(d(mixed).float(), mixed), dim=1)  # [B]; safe at 0
        gp = (norm - 1).square().mean()
        return Terms(self.gp_lambda * gp, {"reg/gp": gp.detach()})


class RpGAN(GANLoss):
    """Relativistic pairing GAN (Jolicoeur-Martineau 2019), the loss of R3GAN (Huang et al. 2024):
    D pairs each real image with a fake one, L_D = softplus(D(fake) - D(real)) and
    L_G = softplus(D(real) - D(fake)), batch means. With R1 and R2 (zero-centred penalties on
    real and fake) it has local convergence guarantees that the non-saturating loss lacks.

    One D forward sees real and fake together (the pairing needs both), so R1 and R2 come from
    one input gradient, split into its real and fake halves."""

    name = "rpgan"
    critic = True
    plausible_loss = 100.0  # softplus of a difference of logits: beyond 100, D's pairs are pinned

    def d_passes(self, d, real, fake, step):
        r1, r2 = self.regularise(step)
        return [lambda: self.pair_pass(d, real, fake, r1, r2)]

    def g_passes(self, d, real, fake, step):
        def g_pass() -> Terms:
            # G's gradient flows through the fake half only: D(real) is taken without a graph,
            # which spares a backward pass through D for B images (D sees each image alone).
            with torch.no_grad():
                real_logits = d(real.detach()).float()
            fake_logits = d(fake).float()
            loss = F.softplus(real_logits - fake_logits).mean()
            return Terms(loss, {"loss/G": loss.detach()})

        return [g_pass]

    def pair_pass(self, d: D, real: Tensor, fake: Tensor, r1: bool, r2: bool) -> Terms:
        both = torch.cat([real.detach(), fake.detach()]).requires_grad_(r1 or r2)  # [2B,C,H,W]
        logits = d(both).float()
        real_logits, fake_logits = logits.chunk(2)
        adv = F.softplus(fake_logits - real_logits).mean()
        # ADA's r_t: D's outputs have no fixed zero here (only differences count, and their level
        # drifts), so the sign is that of each real image's margin over its paired fake.
        terms = Terms(adv, {"loss/D": adv.detach(), "D(x)": self.score(real_logits),
                            "D(G(z))": self.score(fake_logits), "sign/real": real_sign(real_logits - fake_logits)})
        if r1 or r2:
            # Per-sample gradients of the summed logits: each logit depends on its own image only
            # (no BatchNorm in the archs rpgan is meant for). Each half's mean over its B images.
            real_norms, fake_norms = input_grad(logits, both).square().sum(1).chunk(2)  # [B] each
            if r1:
                self._add_zero_centred(terms, "reg/r1", real_norms, self.r1_gamma)
            if r2:
                self._add_zero_centred(terms, "reg/r2", fake_norms, self.r2_gamma)
        return terms


_CLASSES = {cls.name: cls for cls in (BCE, NonSaturating, Hinge, LSGAN, WGANGP, RpGAN)}
LOSSES: tuple[str, ...] = tuple(_CLASSES)


def build_loss(name: str, *, real_label: float = 0.9, r1_gamma: float = 0.0, r2_gamma: float = 0.0,
               reg_every: int = 16, gp_lambda: float = 10.0, drift: float = 1e-3) -> GANLoss:
    """The loss called `name`; options that do not apply to it are ignored."""
    if name not in _CLASSES:
        raise ValueError(f"loss {name!r}: unknown; expected one of {', '.join(LOSSES)}")
    own = {"bce": {"real_label": real_label}, "wgan-gp": {"gp_lambda": gp_lambda, "drift": drift}}
    return _CLASSES[name](r1_gamma=r1_gamma, r2_gamma=r2_gamma, reg_every=reg_every, **own.get(name, {}))
