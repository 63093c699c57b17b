"""StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN") in pure
PyTorch: no compiled ops, on CPU and GPU alike.

G: z -> mapping network (`mapping_layers` equalised linear layers, lr multiplier 0.01, as
StyleGAN2-ADA's small-data setting has 2 where the paper has 8) -> w, broadcast to one w per
layer (`num_ws`). Synthesis starts from a learned 4x4 constant; each resolution has two 3x3
convolutions modulated by w with weight demodulation (the first upsampling 2x), per-pixel noise
with a learned strength, bias and leaky ReLU (gain sqrt 2), and a modulated 1x1 toRGB whose
output is added to the upsampled RGB of the resolution below (the "skip" output). Every weight
has an equalised learning rate (N(0, 1) storage, scaled by 1/sqrt(fan_in) when used).

- Upsampling is bilinear 2x, which is the [1,3,3,1] filter StyleGAN2's upfirdn2d applies after
  zero insertion (bilinear weights 1/4 and 3/4); D downsamples by 2x2 averages.
- A modulated convolution runs in StyleGAN2's non-fused form (the input scaled by the style, one
  shared convolution, the output scaled by the demodulation), through facegan's networks/conv.py,
  whose derivatives of every order are single convolutions; demodulation is computed in float32
  under bf16.
- `w_avg`, a running average of w while training (decay `w_avg_beta`), is a buffer: it is saved,
  exported with the weights, and truncation (`psi`) pulls w towards it. psi 0 gives the average
  face.
- Style mixing regularisation: while training, with probability `mixing` a batch takes its w
  from a second z from a random layer on. The draws use torch's global RNG, which resume restores.
- Noise: random while training; in eval mode each layer uses a fixed noise image (a buffer), so a
  sample depends on z (and psi) alone, as StyleGAN2's noise_mode="const".

D: StyleGAN2's residual D: fromRGB 1x1, residual blocks (two 3x3 convs, 2x average pool; a 1x1
skip; summed and scaled by 1/sqrt 2), the minibatch standard deviation (over groups of
`mbstd_group` images: it couples the images of a group, as in StyleGAN2), a 3x3 conv, a linear
layer (the features a projection D reads) and the logit. Pure modules: no devices, precision,
distribution or files. D returns logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from facegan.networks.common import DiscriminatorNet, GeneratorNet, stage_widths, unconditional
from facegan.networks.conv import conv2d

SQRT2 = math.sqrt(2)


@dataclass(frozen=True)
class Options:
    g_mapping_layers: int = 2  # mapping network depth (StyleGAN2-ADA's small-data 2; the paper's 8)
    g_w_dim: int = 0  # size of w (0: the widest synthesis stage's channels)
    g_mixing: float = 0.9  # probability of style mixing at each training forward (0 is off)
    g_w_avg_beta: float = 0.995  # decay of w's running average, the truncation centre
    d_mbstd_group: int = 4  # images per minibatch-stddev group in D (0 is off)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * SQRT2


class EqualLinear(nn.Module):
    """A linear layer with an equalised learning rate and a learning-rate multiplier."""

    def __init__(self, cin: int, cout: int, bias_init: float = 0.0, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init) / lr_mul))
        self.scale, self.lr_mul = lr_mul / math.sqrt(cin), lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class ModulatedConv(nn.Module):
    """[B,I,H,W], w [B,W] -> [B,O,H',W']: a k x k convolution whose input channels are scaled by a
    style from w (init 1), demodulated to unit output variance unless `demodulate` is off."""

    def __init__(self, cin: int, cout: int, kernel: int, w_dim: int, demodulate: bool = True, up: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.affine = EqualLinear(w_dim, cin, bias_init=1.0)
        self.scale, self.demodulate, self.up = 1 / math.sqrt(cin * kernel * kernel), demodulate, up

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # StyleGAN2's non-fused form: scale the input channels by the style, convolve with the
        # shared weight, scale the output channels by the demodulation. The same result as
        # modulating the weight per sample, without a grouped convolution per batch, which on a
        # CPU ran 40x slower.
        styles = self.affine(w)  # [B,I]
        weight = self.weight * self.scale  # [O,I,k,k]
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        y = conv2d(x * styles[:, :, None, None].to(x.dtype), weight.to(x.dtype), padding=weight.shape[-1] // 2)
        if self.demodulate:  # 1/sqrt(sum over inputs and taps of (weight x style)^2), in float32
            norm = (styles.float().square() @ weight.float().square().sum((2, 3)).t()).add(1e-8).rsqrt()  # [B,O]
            y = y * norm[:, :, None, None].to(y.dtype)
        return y


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv, per-pixel noise x learned strength, bias, leaky ReLU."""

    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int, up: bool):
        super().__init__()
        self.conv = ModulatedConv(cin, cout, 3, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, w)
        noise = torch.randn_like(x[:, :1]) if self.training else self.noise_const.to(x.dtype)
        return lrelu(x + noise * self.noise_strength + self.bias[None, :, None, None])


class ToRGB(nn.Module):
    def __init__(self, cin: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv(cin, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class Generator(GeneratorNet):
    """z [B,z_dim] -> images [B,3,R,R] in [-1,1]; `forward(z, c, psi)` truncates w towards w_avg.
    A style generator (GeneratorNet): `map` and `synthesis` are the two halves of `forward`."""

    space = "w"

    def __init__(self, resolution: int = 64, z_dim: int = 512, width: int = 64, mapping_layers: int = 2,
                 w_dim: int = 0, mixing: float = 0.9, w_avg_beta: float = 0.995):
        super().__init__()
        widths = stage_widths(resolution, width)  # channels at 4, 8, ..., resolution px
        self.resolution, self.z_dim = resolution, z_dim
        self.w_dim, self.mixing, self.w_avg_beta = w_dim or max(widths), mixing, w_avg_beta
        dims = [z_dim] + [self.w_dim] * mapping_layers
        self.mapping = nn.ModuleList(EqualLinear(a, b, lr_mul=0.01) for a, b in zip(dims, dims[1:]))
        self.register_buffer("w_avg", torch.zeros(self.w_dim))
        self.register_buffer("pl_mean", torch.zeros(()))  # path-length regularisation's running mean
        self.const = nn.Parameter(torch.randn(widths[0], 4, 4))
        self.layers = nn.ModuleList([SynthesisLayer(widths[0], widths[0], self.w_dim, 4, up=False)])
        self.to_rgb = nn.ModuleList([ToRGB(widths[0], self.w_dim)])
        for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
            size = 8 * 2**i
            self.layers.extend([SynthesisLayer(cin, cout, self.w_dim, size, up=True),
                                SynthesisLayer(cout, cout, self.w_dim, size, up=False)])
            self.to_rgb.append(ToRGB(cout, self.w_dim))
        # w indices: layer j reads w[j]; the toRGB of the resolution whose last layer is j reads w[j + 1]
        self.num_ws = len(self.layers) + 1

    def map(self, z: torch.Tensor, c: torch.Tensor | None = None, psi: float = 1.0,
            update: bool = True) -> torch.Tensor:
        """z [B,z_dim] -> w [B,w_dim], truncated towards w_avg by psi (1: none, 0: w_avg itself).
        While training (and `update`), w_avg follows the batch's mean w."""
        unconditional(c, self)
        x = z * z.square().mean(1, keepdim=True).add(1e-8).rsqrt()  # normalise z's second moment
        for layer in self.mapping:
            x = lrelu(layer(x))
        if self.training and update and self.w_avg_beta < 1:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        return x if psi == 1 else self.w_avg.to(x.dtype).lerp(x, psi)

    def mix(self, ws: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Style mixing regularisation: with probability `mixing`, every image takes its w from a
        second z (of the same batch size) from a random layer on."""
        cutoff = torch.randint(1, self.num_ws, (), device=z.device)
        cutoff = torch.where(torch.rand((), device=z.device) < self.mixing, cutoff, self.num_ws)
        other = self.map(torch.randn_like(z), update=False)  # (a conditional G's joined input: all noise)
        later = torch.arange(self.num_ws, device=z.device)[None, :, None] >= cutoff
        return torch.where(later, other[:, None], ws)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """ws [B,num_ws,w_dim] (or [B,w_dim]: every layer's) -> images [B,3,R,R]."""
        if ws.dim() == 2:
            ws = ws[:, None].expand(-1, self.num_ws, -1)
        x = self.const[None].expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        x = self.layers[0](x, ws[:, 0])
        rgb = self.to_rgb[0](x, ws[:, 1])
        for i, rgb_layer in enumerate(self.to_rgb[1:]):
            j = 1 + 2 * i
            x = self.layers[j + 1](self.layers[j](x, ws[:, j]), ws[:, j + 1])
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False) + rgb_layer(x, ws[:, j + 2])
        return rgb

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, psi: float = 1.0) -> torch.Tensor:
        ws = self.map(z.flatten(1), c, psi)[:, None].expand(-1, self.num_ws, -1)  # [B,num_ws,w_dim]
        if self.training and self.mixing > 0:
            ws = self.mix(ws, z.flatten(1))
        return self.synthesis(ws)


class EqualConv(nn.Module):
    """A stride-1 conv with an equalised learning rate (networks/conv.py's, fast R1 on a GPU)."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale = 1 / math.sqrt(cin * kernel * kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, (self.weight * self.scale).to(x.dtype), None if self.bias is None else self.bias.to(x.dtype),
                      padding=self.weight.shape[-1] // 2)


class DBlock(nn.Module):
    """Two 3x3 convs and a 2x2 average pool, with a 1x1 skip; the sum scaled by 1/sqrt 2."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0, self.conv1, self.skip = EqualConv(cin, cin, 3), EqualConv(cin, cout, 3), EqualConv(cin, cout, 1,
                                                                                                       bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))
        x = F.avg_pool2d(lrelu(self.conv1(lrelu(self.conv0(x)))), 2)
        return (skip + x) / SQRT2


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """x [B,C,H,W] plus one channel: the mean standard deviation over each group of images."""
    b = x.shape[0]
    g = min(group, b)
    while b % g:
        g -= 1
    y = x.float().reshape(g, -1, *x.shape[1:])  # [G, B/G, C, H, W]
    y = (y.var(0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [B/G]
    y = y.repeat(g)[:, None, None, None].expand(-1, 1, *x.shape[2:]).to(x.dtype)
    return torch.cat([x, y], 1)


class Discriminator(DiscriminatorNet):
    """images [B,3,R,R] -> logits [B]; `features` [B,feature_dim] are what the logit reads."""

    def __init__(self, resolution: int = 64, width: int = 64, mbstd_group: int = 4):
        super().__init__()
        widths = stage_widths(resolution, width)[::-1]  # channels at resolution, ..., 8, 4 px
        self.resolution, self.mbstd_group = resolution, mbstd_group
        self.from_rgb = EqualConv(3, widths[0], 1)
        self.blocks = nn.Sequential(*(DBlock(cin, cout) for cin, cout in zip(widths, widths[1:])))
        c = widths[-1]
        self.conv = EqualConv(c + (1 if mbstd_group else 0), c, 3)
        self.fc = EqualLinear(c * 16, c)
        self.out = EqualLinear(c, 1)
        self.feature_dim = c

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(lrelu(self.from_rgb(x)))  # [B,C,4,4]
        if self.mbstd_group:
            x = minibatch_stddev(x, self.mbstd_group)
        return lrelu(self.fc(lrelu(self.conv(x)).flatten(1)))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(features).squeeze(1)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        unconditional(c, self)
        return self.head(self.features(x))
