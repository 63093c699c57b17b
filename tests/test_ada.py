"""ADA: the augmentation pipeline's transforms and p's controller, on known inputs."""

from __future__ import annotations

import math

import pytest
import torch

from facegan.training.ada import AdaController, augment


def images(b: int = 16, size: int = 8) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def feed(ada: AdaController, sign: float, steps: int, step0: int = 0, step_nimg: int = 100) -> list[float]:
    """`steps` G steps whose one D step each saw real logits of mean sign `sign`; p after each."""
    ps = []
    for step in range(step0 + 1, step0 + steps + 1):
        ada.observe(torch.tensor(sign))
        ada.update(step, step_nimg, lambda t: t, torch.device("cpu"))
        ps.append(ada.p)
    return ps


def test_p_rises_while_d_overfits_and_falls_when_it_does_not():
    ada = AdaController(target=0.6, kimg=1.0, interval=4)  # 4 steps x 100 images / 1000 = 0.4 per update
    ps = feed(ada, 0.9, 8)  # D's real logits drift positive: r_t 0.9 > 0.6
    assert ps == pytest.approx([0, 0, 0, 0.4, 0.4, 0.4, 0.4, 0.8])
    assert ada.rt == pytest.approx(0.9)
    ps = feed(ada, 0.2, 12, step0=8)  # r_t below the target: p falls, and stops at 0
    assert ps[3] == pytest.approx(0.4) and ps[7] == pytest.approx(0.0) and ps[11] == 0.0
    ps = feed(ada, 1.0, 12, step0=20)  # and never passes 1
    assert ps[-1] == 1.0


def test_rt_is_the_mean_over_the_interval_and_ranks():
    ada = AdaController(target=0.6, kimg=1.0, interval=2)
    ada.observe(torch.tensor(1.0))
    ada.update(1, 100, lambda t: t * 2, torch.device("cpu"))  # not due: nothing reduced
    ada.observe(torch.tensor(0.0))
    ada.update(2, 100, lambda t: t * 2, torch.device("cpu"))  # "two ranks" that saw the same
    assert ada.rt == pytest.approx(0.5) and ada.p == 0.0  # below 0.6: p stays at 0


def test_state_round_trip_keeps_pending_sums_on_the_main_process():
    ada = AdaController(target=0.6, kimg=1.0, interval=4, p=0.3)
    ada.observe(torch.tensor(0.75))
    state = ada.state(lambda t: t, torch.device("cpu"), main=True)
    assert state == {"p": 0.3, "rt": None, "sign_sum": 0.75, "batches": 1}
    other = AdaController(target=0.6, kimg=1.0, interval=4)
    other.load(state, main=False)
    assert (other.p, other.sign_sum, other.batches) == (0.3, 0.0, 0)  # the main process carries the sums
    again = AdaController(target=0.6, kimg=1.0, interval=4)
    again.load(state, main=True)
    for a in (ada, again):  # both see 4 more batches: the same update
        feed(a, 1.0, 4)
    assert ada.p == again.p and ada.rt == again.rt == pytest.approx((0.75 + 4) / 5)


def test_p_zero_is_the_identity_and_draws_nothing():
    x = images()
    state = torch.random.get_rng_state()
    assert augment(x, 0.0) is x
    assert torch.equal(torch.random.get_rng_state(), state)


def test_geometric_transforms_move_pixels_without_changing_them():
    torch.manual_seed(0)
    x = images()
    from facegan.training.ada import _flip_rotate, _translate
    for transform in (_flip_rotate, _translate):
        y = transform(x, 1.0)
        assert y.shape == x.shape
        for a, b in zip(x, y):  # each image keeps its pixel values (flip, rotate, shift with reflection)
            assert set(map(tuple, b.flatten(1).T.tolist())) <= set(map(tuple, a.flatten(1).T.tolist()))
    assert not torch.equal(_flip_rotate(x, 1.0), x)


def test_colour_is_one_matrix_per_image_and_keeps_grey_grey():
    torch.manual_seed(0)
    from facegan.training.ada import _colour
    grey = torch.linspace(-1, 1, 8).view(1, 1, 1, 8).expand(4, 3, 8, 8).contiguous()
    out = _colour(grey, 1.0)
    # hue and saturation act around the grey axis: a grey image stays grey (brightness and
    # contrast only shift and scale it)
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 1], out[:, 2], atol=1e-5, rtol=0)
    assert not torch.allclose(out, grey)


def test_pipeline_is_differentiable_and_random_per_image():
    torch.manual_seed(0)
    x = images(64).requires_grad_(True)
    y = augment(x, 1.0)
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    changed = [not torch.allclose(a, b) for a, b in zip(x.detach(), y.detach())]
    assert all(changed)
    from facegan.training.ada import _translate
    torch.manual_seed(0)
    half = _translate(x.detach(), 0.5)  # chosen for about half of them (then 8 of 9 shifts move)
    moved = sum(not torch.equal(a, b) for a, b in zip(x.detach(), half))
    assert 12 < moved < 45, moved
    assert math.isclose(AdaController().target, 0.6)
