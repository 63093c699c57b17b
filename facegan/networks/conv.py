"""A stride-1 Conv2d whose gradients of every order are themselves single (grouped) convolutions.

R1 and R2 differentiate D's gradient w.r.t. its input once more, w.r.t. D's weights. PyTorch's
own second derivative of a grouped convolution computes the weight term one group at a time
(`_convolution_double_backward`): for R3GAN's grouped 3x3 convolutions (16 channels a group, up
to 64 groups a layer) that is thousands of small kernels, and on an H100 R1 ran 20x slower than
D's forward and backward together (bench/step_profile.py; bench/RESULTS.md). StyleGAN2-ADA met
the same problem and wrote its conv2d_gradfix; this is the same idea, written for our layers:

- forward: y = conv(x, w) (or its transpose, which the backward needs);
- backward with a graph (create_graph, as R1 takes it): dx = the transposed convolution of dy
  with w (the same Function, transposed), and dw = `_WeightGrad(dy, x)`, PyTorch's weight
  gradient for all groups at once; `_WeightGrad`'s own backward is again two convolutions of this
  Function, so R1's double backward never reaches PyTorch's per-group path;
- a plain backward (no graph) is PyTorch's own fused convolution_backward, as for nn.Conv2d.

Stride 1 and symmetric padding only (output and input sizes then match the transpose exactly):
that is every convolution R3GAN's networks have. Mixed precision: under autocast `conv2d` casts
the operands as F.conv2d would (differentiably, before the Function), and the Function itself
runs with autocast off, so every derivative computes in that dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _autocast_dtype(x: Tensor) -> torch.dtype | None:
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: int, groups: int,
                transposed: bool) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conf = (padding, groups, transposed)
        conv = F.conv_transpose2d if transposed else F.conv2d
        with torch.autocast(x.device.type, enabled=False):
            return conv(x, weight, bias, padding=padding, groups=groups)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        padding, groups, transposed = ctx.conf
        grad = grad.to(x.dtype)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if not torch.is_grad_enabled():  # a plain backward (no create_graph): PyTorch's one fused call
            out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
            dx, dw, db = torch.ops.aten.convolution_backward(
                grad, x, weight, [out_channels] if need_b else None, [1, 1], [padding, padding], [1, 1],
                transposed, [0, 0], groups, [need_x, need_w, need_b])
            return dx, dw, db, None, None, None
        dx = _Conv.apply(grad, weight, None, padding, groups, not transposed) if need_x else None
        dw = _WeightGrad.apply(grad, x, weight, padding, groups, transposed) if need_w else None
        db = grad.sum((0, 2, 3)) if need_b else None
        return dx, dw, db, None, None, None


class _WeightGrad(torch.autograd.Function):
    """d<grad, conv(x, w)>/dw: linear in `grad` and in `x`; `weight` gives only its shape."""

    @staticmethod
    def forward(ctx, grad: Tensor, x: Tensor, weight: Tensor, padding: int, groups: int,
                transposed: bool) -> Tensor:
        ctx.save_for_backward(grad, x)
        ctx.conf = (padding, groups, transposed)
        # The transposed convolution's weight gradient is the forward one with the roles of
        # input and output swapped: aten's convolution_backward takes the output's gradient first.
        out_grad, inp = (x, grad) if transposed else (grad, x)
        _, dw, _ = torch.ops.aten.convolution_backward(
            out_grad, inp, weight, None, [1, 1], [padding, padding], [1, 1], False, [0, 0], groups,
            [False, True, False])
        return dw

    @staticmethod
    def backward(ctx, grad_dw: Tensor):
        grad, x = ctx.saved_tensors
        padding, groups, transposed = ctx.conf
        grad_dw = grad_dw.to(x.dtype)
        d_grad = _Conv.apply(x, grad_dw, None, padding, groups, transposed) if ctx.needs_input_grad[0] else None
        d_x = _Conv.apply(grad, grad_dw, None, padding, groups, not transposed) if ctx.needs_input_grad[1] else None
        return d_grad, d_x, None, None, None, None


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, padding: int = 0, groups: int = 1,
           any_order: bool | None = None) -> Tensor:
    """F.conv2d at stride 1 with `padding` on every side. With `any_order` (default: on a GPU) its
    derivatives of every order are single convolutions; without, it is F.conv2d itself, which is
    10% faster for a CPU step of the modern preset (bench/step_profile.py), where R1 runs every
    16 steps."""
    if not (x.is_cuda if any_order is None else any_order):
        return F.conv2d(x, weight, bias, padding=padding, groups=groups)
    dtype = _autocast_dtype(x)
    if dtype is not None:  # what autocast does inside F.conv2d, done outside so the casts stay in the graph
        x, weight, bias = x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)
    return _Conv.apply(x, weight, bias, padding, groups, False)


class Conv2d(nn.Conv2d):
    """nn.Conv2d (stride 1, the same zero padding on every side) running `conv2d` above."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        uneven = isinstance(self.padding, str) or len(set(self.padding)) != 1  # 'same'/'valid', or (1, 0)
        if self.stride != (1, 1) or self.dilation != (1, 1) or uneven or self.padding_mode != "zeros":
            raise ValueError("facegan.networks.conv.Conv2d: stride 1, dilation 1 and one zero padding on "
                             f"every side only; got stride {self.stride}, padding {self.padding}")

    def forward(self, x: Tensor) -> Tensor:
        return conv2d(x, self.weight, self.bias, self.padding[0], self.groups)
