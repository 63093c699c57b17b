"""Losses, regularisers, lr schedules and the EMA of G, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from facegan import networks
from facegan.training.ema import EMA, ema_beta
from facegan.training.losses import LOSSES, GANLoss, build_loss
from facegan.training.schedules import SCHEDULES, lr_factor

REAL = torch.tensor([2.0, -1.0]).view(2, 1, 1, 1)  # [B,1,1,1]: with `identity_d` these are the logits
FAKE = torch.tensor([0.5, -3.0]).view(2, 1, 1, 1)


def identity_d(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(1)  # [B]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def bce(logit: float, target: float) -> float:
    p = sigmoid(logit)
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def mean(xs) -> float:
    return sum(xs) / len(xs)


def run(passes) -> dict[str, float]:
    """Run passes as the loop does (backward after each) and sum each logged key over them."""
    sums: dict[str, float] = {}
    for p in passes:
        terms = p()
        assert terms.loss.ndim == 0
        if terms.loss.requires_grad:
            terms.loss.backward()
        for k, v in terms.logs.items():
            assert v.ndim == 0 and not v.requires_grad and v.dtype == torch.float32
            sums[k] = sums.get(k, 0.0) + v.item()
    return sums


# Expected D (real part, fake part), G, and what D(x), D(G(z)) log, on logits [2, -1] and [0.5, -3].
EXPECTED = {
    "bce": (mean([bce(2, 0.9), bce(-1, 0.9)]), mean([bce(0.5, 0), bce(-3, 0)]),
            mean([bce(0.5, 1), bce(-3, 1)]), mean([sigmoid(2), sigmoid(-1)]), mean([sigmoid(0.5), sigmoid(-3)])),
    "nonsat": (mean([bce(2, 1), bce(-1, 1)]), mean([bce(0.5, 0), bce(-3, 0)]),
               mean([bce(0.5, 1), bce(-3, 1)]), mean([sigmoid(2), sigmoid(-1)]), mean([sigmoid(0.5), sigmoid(-3)])),
    "hinge": ((0 + 2) / 2, (1.5 + 0) / 2, -(0.5 - 3) / 2, 0.5, -1.25),
    "lsgan": (0.5 * (1 + 4) / 2, 0.5 * (0.25 + 9) / 2, 0.5 * (0.25 + 16) / 2, 0.5, -1.25),
    "wgan-gp": (-0.5, -1.25, 1.25, 0.5, -1.25),
}


@pytest.mark.parametrize("name", [n for n in LOSSES if n != "rpgan"])  # rpgan pairs: its own test
def test_loss_values_on_known_logits(name):
    d_real, d_fake, g, dx, dgz = EXPECTED[name]
    loss = build_loss(name, drift=0.0)
    passes = loss.d_passes(identity_d, REAL, FAKE, step=1)
    real_terms, fake_terms = passes[0](), passes[1]()
    assert real_terms.loss.item() == pytest.approx(d_real, abs=1e-6)
    assert fake_terms.loss.item() == pytest.approx(d_fake, abs=1e-6)
    logs = run(loss.d_passes(identity_d, REAL, FAKE, step=1))
    assert logs["loss/D"] == pytest.approx(d_real + d_fake, abs=1e-6)
    assert logs["D(x)"] == pytest.approx(dx, abs=1e-6)
    assert logs["D(G(z))"] == pytest.approx(dgz, abs=1e-6)
    assert run(loss.g_passes(identity_d, REAL, FAKE, step=1)) == pytest.approx({"loss/G": g}, abs=1e-6)


def test_flags_and_options():
    assert {n for n in LOSSES if build_loss(n).critic} == {"hinge", "lsgan", "wgan-gp", "rpgan"}
    assert {n for n in LOSSES if build_loss(n).needs_no_batchnorm} == {"wgan-gp"}
    with_bn = networks.build("discriminator", {"arch": "dcgan", "kwargs": {"resolution": 32, "width": 8}})
    with pytest.raises(ValueError, match="loss=wgan-gp cannot train a D with BatchNorm"):
        build_loss("wgan-gp").check_discriminator(with_bn)
    build_loss("bce").check_discriminator(with_bn)
    assert build_loss("bce", real_label=0.8).real_label == 0.8
    wgan = build_loss("wgan-gp", gp_lambda=5.0, drift=0.01, reg_every=4, r1_gamma=1.0)
    assert (wgan.gp_lambda, wgan.drift, wgan.reg_every, wgan.r1_gamma) == (5.0, 0.01, 4, 1.0)
    assert all(build_loss(n).name == n for n in LOSSES)


def test_each_pass_runs_one_d_forward_with_a_graph_when_called():
    calls = []

    def d(x):
        calls.append((x.shape[0], torch.is_grad_enabled()))
        return identity_d(x)

    for name in LOSSES:
        loss = build_loss(name, r1_gamma=1.0, r2_gamma=1.0, reg_every=1)
        for passes in (loss.d_passes(d, REAL, FAKE, step=0), loss.g_passes(d, REAL, FAKE, step=0)):
            assert calls == []  # lazy: nothing runs until the loop calls a pass
            for p in passes:
                p()
                assert [grad for _, grad in calls].count(True) == 1  # one graph, one backward
                calls.clear()
    # rpgan's G pass: D(real) without a graph (no backward through D for it), then D(fake)
    build_loss("rpgan").g_passes(d, REAL, FAKE, step=0)[0]()
    assert calls == [(REAL.shape[0], False), (FAKE.shape[0], True)]


class LinearD(nn.Module):
    """D(x) = sum(w * x) over C,H,W: dD/dx = w for every sample, ||w||^2 = 12 * 0.5^2 = 3."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.full((3, 2, 2), 0.5))

    def forward(self, x):
        return (self.w * x).flatten(1).sum(1)


def images(seed: int) -> torch.Tensor:
    return torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(seed))  # [4,3,2,2]


@pytest.mark.parametrize("name", ["nonsat", "hinge", "wgan-gp"])
def test_r1_r2_lazy_weighting(name):
    d = LinearD()
    loss = build_loss(name, r1_gamma=2.0, r2_gamma=0.5, reg_every=4, drift=0.0)
    real, fake = images(0), images(1)
    plain = build_loss(name, drift=0.0).d_passes(d, real, fake, step=0)
    adv_real, adv_fake = plain[0]().loss, plain[1]().loss.item()
    adv_grad = torch.autograd.grad(adv_real, d.w)[0]

    passes = loss.d_passes(d, real, fake, step=8)  # due: 8 % 4 == 0
    real_terms, fake_terms = passes[0](), passes[1]()
    assert real_terms.logs["reg/r1"].item() == pytest.approx(3.0)
    assert fake_terms.logs["reg/r2"].item() == pytest.approx(3.0)
    assert real_terms.loss.item() == pytest.approx(adv_real.item() + 2.0 / 2 * 4 * 3.0, abs=1e-5)
    assert fake_terms.loss.item() == pytest.approx(adv_fake + 0.5 / 2 * 4 * 3.0, abs=1e-5)
    assert not real.requires_grad and not fake.requires_grad  # the caller's tensors are left alone

    # The penalty is differentiable (create_graph): d/dw of c * ||w||^2 is 2c * w.
    torch.testing.assert_close(torch.autograd.grad(real_terms.loss, d.w)[0] - adv_grad, 2 * 4.0 * d.w.detach())

    logs = run(loss.d_passes(d, real, fake, step=9))  # not due
    assert "reg/r1" not in logs and "reg/r2" not in logs
    logs = run(build_loss(name, r1_gamma=1.0, reg_every=1).d_passes(d, real, fake, step=7))  # non-lazy
    assert logs["reg/r1"] == pytest.approx(3.0) and "reg/r2" not in logs


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_rpgan_pairs_real_and_fake_in_one_pass():
    """Logits real [2, -1], fake [0.5, -3]: D's loss is the mean of softplus(fake_i - real_i), G's
    of softplus(real_i - fake_i). D's pass sees the 4 images in one forward; G's pass takes the
    2 real ones (no graph) and the 2 fake ones apart."""
    loss = build_loss("rpgan")
    calls = []

    def d(x):
        calls.append(x.shape[0])
        return identity_d(x)

    d_passes, g_passes = loss.d_passes(d, REAL, FAKE, step=1), loss.g_passes(d, REAL, FAKE, step=1)
    assert len(d_passes) == len(g_passes) == 1
    logs = run(d_passes)
    assert logs["loss/D"] == pytest.approx(mean([softplus(0.5 - 2), softplus(-3 + 1)]), abs=1e-6)
    assert (logs["D(x)"], logs["D(G(z))"]) == pytest.approx((0.5, -1.25))
    assert logs["sign/real"] == 1.0  # ADA's r_t: the sign of each real's margin over its fake (2-0.5, -1+3)
    assert run(g_passes) == pytest.approx({"loss/G": mean([softplus(2 - 0.5), softplus(-1 + 3)])}, abs=1e-6)
    assert calls == [4, 2, 2]


def test_rpgan_r1_r2_from_one_input_gradient():
    """With D(x) = 0.5 * ||x||^2 per image, dD/dx = x: R1 is the mean ||real||^2, R2 the mean
    ||fake||^2, each weighted gamma/2 x reg_every, and differentiable (they reach D's weights)."""
    real, fake = images(0), images(1)
    d = LinearD()
    loss = build_loss("rpgan", r1_gamma=2.0, r2_gamma=0.5, reg_every=4)
    (terms,) = (p() for p in loss.d_passes(lambda x: 0.5 * x.square().flatten(1).sum(1), real, fake, step=8))
    r1, r2 = (x.flatten(1).square().sum(1).mean().item() for x in (real, fake))
    assert terms.logs["reg/r1"].item() == pytest.approx(r1, rel=1e-5)
    assert terms.logs["reg/r2"].item() == pytest.approx(r2, rel=1e-5)
    assert terms.loss.item() == pytest.approx(terms.logs["loss/D"].item() + 4 * (1.0 * r1 + 0.25 * r2), rel=1e-5)
    (lazy,) = (p() for p in loss.d_passes(d, real, fake, step=9))
    assert "reg/r1" not in lazy.logs and "reg/r2" not in lazy.logs
    (due,) = (p() for p in loss.d_passes(d, real, fake, step=12))
    assert due.logs["reg/r1"].item() == pytest.approx(3.0) and due.logs["reg/r2"].item() == pytest.approx(3.0)
    adv = build_loss("rpgan").d_passes(d, real, fake, step=1)[0]().loss
    grad = torch.autograd.grad(due.loss, d.w)[0] - torch.autograd.grad(adv, d.w)[0]
    torch.testing.assert_close(grad, 2 * 4 * (1.0 + 0.25) * d.w.detach())  # d/dw of c ||w||^2


def test_wgan_gp_three_passes_gp_and_drift():
    d = LinearD()
    loss = build_loss("wgan-gp", gp_lambda=10.0, drift=1e-3)
    passes = loss.d_passes(d, images(0), images(1), step=1)
    assert len(passes) == 3 and len(loss.g_passes(d, images(0), images(1), step=1)) == 1
    real_terms, _, gp_terms = (p() for p in passes)
    gp = (math.sqrt(3) - 1) ** 2  # ||dD/dx|| = ||w|| whatever the interpolation
    assert gp_terms.logs == pytest.approx({"reg/gp": gp})
    assert gp_terms.loss.item() == pytest.approx(10.0 * gp)
    d.zero_grad()
    gp_terms.loss.backward()  # d/dw of lambda * (||w|| - 1)^2
    torch.testing.assert_close(d.w.grad, 2 * 10.0 * (math.sqrt(3) - 1) * d.w.detach() / math.sqrt(3))

    drift = mean([2.0**2, 1.0**2])
    real_terms = build_loss("wgan-gp", drift=1e-3).d_passes(identity_d, REAL, FAKE, step=1)[0]()
    assert real_terms.logs["reg/drift"].item() == pytest.approx(drift)
    assert real_terms.logs["loss/D"].item() == pytest.approx(-0.5)
    assert real_terms.loss.item() == pytest.approx(-0.5 + 1e-3 * drift)


def test_wgan_gp_interpolates_per_sample():
    """With D(x) = 0.5 * ||x||^2, dD/dx = x: the GP sees the interpolate itself."""
    real, fake = images(0), images(1)
    torch.manual_seed(3)
    a = torch.rand(4, 1, 1, 1)
    norm = (a * real + (1 - a) * fake).flatten(1).norm(dim=1)
    torch.manual_seed(3)
    gp_pass = build_loss("wgan-gp").d_passes(lambda x: 0.5 * x.square().flatten(1).sum(1), real, fake, step=1)[2]
    assert gp_pass().logs["reg/gp"].item() == pytest.approx(((norm - 1) ** 2).mean().item(), rel=1e-5)


def test_gan_loss_checks_its_options():
    with pytest.raises(ValueError, match="reg_every=0"):
        build_loss("nonsat", reg_every=0)
    assert isinstance(build_loss("hinge"), GANLoss)


def test_unknown_names_are_one_line_errors():
    with pytest.raises(ValueError) as e:
        build_loss("foo")
    assert str(e.value) == "loss 'foo': unknown; expected one of bce, nonsat, hinge, lsgan, wgan-gp, rpgan"
    with pytest.raises(ValueError) as e:
        lr_factor("step", 0, 100, 0)
    assert str(e.value) == "lr schedule 'step': unknown; expected one of constant, linear, cosine"


# lr_factor(kind, nimg) with total 1000 images and a warm-up of 100.
CURVES = {
    "constant": {0: 0.01, 50: 0.5, 100: 1.0, 550: 1.0, 1000: 1.0, 2000: 1.0},
    "linear": {0: 0.01, 50: 0.5, 100: 1.0, 325: 0.75, 550: 0.5, 1000: 0.0, 2000: 0.0},
    "cosine": {0: 0.01, 50: 0.5, 100: 1.0, 325: 0.5 + math.sqrt(2) / 4, 550: 0.5, 1000: 0.0, 2000: 0.0},
}


@pytest.mark.parametrize("kind", SCHEDULES)
def test_schedule_curves(kind):
    for nimg, expected in CURVES[kind].items():
        assert lr_factor(kind, nimg, 1000, 100) == pytest.approx(expected, abs=1e-12), nimg
    assert isinstance(lr_factor(kind, 10, 1000, 100), float)


def test_anneal_over_the_last_kimg_to_a_floor():
    """--lr-decay-kimg 400 --lr-final 0.2 over 1000 images: 1 until 600, a cosine to 0.2 at 1000."""
    curve = {0: 0.01, 100: 1.0, 600: 1.0, 800: 0.6, 1000: 0.2, 2000: 0.2}
    for nimg, expected in curve.items():
        assert lr_factor("cosine", nimg, 1000, 100, 400, 0.2) == pytest.approx(expected, abs=1e-12), nimg
    assert lr_factor("linear", 700, 1000, 0, 400, 0.2) == pytest.approx(0.2 + 0.8 * 0.75)
    assert lr_factor("cosine", 500, 1000, 0, 0, 0.2) == pytest.approx(0.6)  # 0: over the whole run
    assert lr_factor("constant", 500, 1000, 0, 400, 0.2) == 1.0


def test_schedule_without_warmup():
    assert lr_factor("constant", 0, 1000, 0) == 1.0
    assert lr_factor("linear", 0, 1000, 0) == 1.0
    assert lr_factor("linear", 500, 1000, 0) == pytest.approx(0.5)
    assert lr_factor("cosine", 500.0, 1000.0, 0.0) == pytest.approx(0.5)


def test_ema_beta_ramp():
    assert ema_beta(64, 0, 10, 0.05) == 0.0  # the first update copies G
    assert ema_beta(64, 100_000, 10, 0.05) == pytest.approx(math.exp(-math.log(2) * 64 / 5000))  # ramp caps it
    assert ema_beta(64, 1_000_000, 10, 0.05) == pytest.approx(math.exp(-math.log(2) * 64 / 10_000))
    assert ema_beta(64, 0, 10, None) == ema_beta(64, 0, 10, 0) == pytest.approx(math.exp(-math.log(2) * 64 / 10_000))
    # A half-life: after 10 kimg of updates the old weights count for one half.
    assert ema_beta(64, 10**9, 10, 0.05) ** (10_000 / 64) == pytest.approx(0.5)


def tiny_g() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_ema_update_lerps_params_and_copies_buffers():
    torch.manual_seed(0)
    g = tiny_g()
    ema = EMA(g)
    assert ema.module.training and all(not p.requires_grad for p in ema.parameters())
    assert set(ema.state_dict()) == {f"module.{k}" for k in g.state_dict()}
    old = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p))
    g(torch.randn(8, 3))  # moves BatchNorm's running stats
    ema.update(g, 0.9)
    new, src = ema.module.state_dict(), g.state_dict()
    for name, _ in g.named_parameters():
        assert torch.equal(new[name], torch.lerp(old[name], src[name], 0.1))
        torch.testing.assert_close(new[name], 0.9 * old[name] + 0.1 * src[name])
    for name, _ in g.named_buffers():
        assert torch.equal(new[name], src[name])
    ema.update(g, 0.0)
    assert all(torch.equal(new[k], src[k]) for k in src)  # beta 0 (the ramp's first step) copies G
    torch.testing.assert_close(ema(torch.ones(2, 3)), g(torch.ones(2, 3)))
