"""Networks as components: the dcgan arch at every resolution, specs and their errors, exports
that load from the file alone (legacy ones too), an arch added as one module + one line, and
stylegan2's W: truncation, style mixing and the sample command's figures."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from facegan import networks
from facegan.networks import exports


def dcgan(resolution: int = 32, **options) -> tuple[torch.nn.Module, torch.nn.Module]:
    g_spec, d_spec = networks.make_specs("dcgan", resolution, z_dim=16, ngf=8, ndf=8, options=options)
    return networks.build("generator", g_spec), networks.build("discriminator", d_spec)


@pytest.mark.parametrize("resolution", networks.RESOLUTIONS)
def test_dcgan_shapes_and_channels_last(resolution):
    torch.manual_seed(0)
    g, d = dcgan(resolution)
    g.eval(), d.eval()  # BatchNorm from running stats: the same numbers in both layouts
    z = torch.randn(3, g.z_dim)
    with torch.no_grad():
        images = g(z)
        logits = d(images)
    assert (g.z_dim, g.resolution, d.resolution) == (16, resolution, resolution)
    assert images.shape == (3, 3, resolution, resolution) and images.abs().max() <= 1
    assert logits.shape == (3,)
    g, d = networks.to_channels_last(g), networks.to_channels_last(d)
    weights = {**{f"g.{k}": v for k, v in g.state_dict().items()}, **{f"d.{k}": v for k, v in d.state_dict().items()}}
    for name, w in weights.items():  # G's first weight stays contiguous (see dcgan's to_channels_last)
        if w.dim() == 4:
            assert w.is_contiguous(memory_format=torch.contiguous_format if name == "g.net.0.weight"
                                   else torch.channels_last), name
    with torch.no_grad():
        torch.testing.assert_close(g(z), images, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(d(images.contiguous(memory_format=torch.channels_last)), logits,
                                   atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["resnet", "r3gan"])
@pytest.mark.parametrize("resolution", networks.RESOLUTIONS)
def test_resnet_and_r3gan_shapes_layout_and_per_sample_d(arch, resolution):
    """Shapes at every resolution, the same numbers in channels_last, and a D without batch
    coupling (no BatchNorm: R1/R2 and rpgan's pairing need per-sample logits)."""
    torch.manual_seed(0)
    g_spec, d_spec = networks.make_specs(arch, resolution, z_dim=16, ngf=8, ndf=8, options={})
    g, d = networks.build("generator", g_spec), networks.build("discriminator", d_spec)
    g.eval(), d.eval()  # BatchNorm statistics and spectral norm's power iteration fixed
    z = torch.randn(3, 16)
    with torch.no_grad():
        images = g(z)
        logits = d(images)
        assert images.shape == (3, 3, resolution, resolution) and logits.shape == (3,)
        assert torch.isfinite(images).all() and images.std() > 0.01
        torch.testing.assert_close(d(images[1:2]), logits[1:2], atol=1e-5, rtol=1e-4)
        assert not networks.has_batchnorm(d)
        g, d = networks.to_channels_last(g), networks.to_channels_last(d)
        torch.testing.assert_close(g(z), images, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(d(images.contiguous(memory_format=torch.channels_last)), logits,
                                   atol=1e-5, rtol=1e-4)


def test_r3gan_blocks_start_as_identity_and_resample_low_pass():
    from facegan.networks import r3gan
    block = r3gan.Block(8, expansion=2, group_width=4, total_blocks=4)
    assert block.mix.groups == 4  # 16 expanded channels in groups of 4
    x = torch.randn(2, 8, 6, 6)
    assert torch.equal(block(x), x)  # fix-up: the last conv starts at zero
    up, down = r3gan.LowPass(up=True), r3gan.LowPass(up=False)
    y = up(x)
    assert y.shape == (2, 8, 12, 12)
    torch.testing.assert_close(y[..., ::2, ::2], x)  # interpolating: the samples are kept
    torch.testing.assert_close(y[..., 1:-1:2, ::2], (x[..., :-1, :] + x[..., 1:, :]) / 2)  # midpoints
    flat = torch.full((1, 2, 8, 8), 3.0)
    torch.testing.assert_close(down(flat)[..., 1:, 1:], torch.full((1, 2, 3, 3), 3.0))  # unit gain inside
    assert r3gan._groups(24, 16) == 1 and r3gan._groups(48, 16) == 3 and r3gan._groups(56, 16) == 2


def test_r3gan_gpu_resampling_is_the_cpu_convolution():
    """upsample/downsample (the GPU path) compute LowPass's CPU convolutions, channels_last kept."""
    from facegan.networks import r3gan
    x = torch.randn(2, 5, 8, 6, dtype=torch.float64)
    up, down = r3gan.LowPass(up=True).double(), r3gan.LowPass(up=False).double()
    torch.testing.assert_close(r3gan.upsample(x), up(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(r3gan.downsample(x), down(x), rtol=0, atol=1e-12)
    nhwc = x.contiguous(memory_format=torch.channels_last)
    assert r3gan.upsample(nhwc).is_contiguous(memory_format=torch.channels_last)


def _penalty_grads(conv, x, w, b, padding, groups):
    """An R1-like chain: y, dy/dx (with its graph), then the gradients of ||dy/dx||^2 + mean(y^2)
    w.r.t. w and b, and a third-order one."""
    x = x.clone().requires_grad_(True)
    y = conv(x, w, b, padding=padding, groups=groups)
    (gx,) = torch.autograd.grad(y.sin().sum(), x, create_graph=True)
    gw, gb = torch.autograd.grad(gx.square().sum() + y.square().mean(), [w, b], create_graph=True)
    (g3,) = torch.autograd.grad(gw.square().sum(), w)
    return [t.detach() for t in (y, gx, gw, gb, g3)]


@pytest.mark.parametrize("cin,cout,k,padding,groups,layout", [
    (4, 6, 1, 0, 1, torch.contiguous_format), (8, 8, 3, 1, 4, torch.contiguous_format),
    (8, 8, 3, 1, 4, torch.channels_last), (16, 8, 3, 1, 2, torch.contiguous_format)])
def test_any_order_conv_matches_torch_to_third_order(cin, cout, k, padding, groups, layout):
    """facegan.networks.conv (R1's fast path on a GPU): the values and the first, second and third
    derivatives of F.conv2d, grouped and 1x1, both layouts (float64, so to rounding)."""
    import torch.nn.functional as F

    from facegan.networks import conv
    torch.manual_seed(0)
    x = torch.randn(3, cin, 6, 5, dtype=torch.float64).contiguous(memory_format=layout)
    w = torch.randn(cout, cin // groups, k, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(cout, dtype=torch.float64, requires_grad=True)
    ours = _penalty_grads(lambda *a, **kw: conv.conv2d(*a, **kw, any_order=True), x, w, b, padding, groups)
    for mine, theirs in zip(ours, _penalty_grads(F.conv2d, x, w, b, padding, groups)):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)
    plain = []  # a plain backward (no graph): PyTorch's fused path inside the Function
    for fn in (lambda *a, **kw: conv.conv2d(*a, **kw, any_order=True), F.conv2d):
        xr = x.clone().requires_grad_(True)
        plain.append(torch.autograd.grad(fn(xr, w, b, padding=padding, groups=groups).sin().sum(), [xr, w, b]))
    for mine, theirs in zip(*plain):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)
    args = (torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True),
            torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradgradcheck(lambda x, w: conv.conv2d(x, w, None, 1, 2, any_order=True), args)


def test_any_order_conv_under_autocast_and_its_limits():
    """Under bf16 autocast it computes what F.conv2d does, and R1's second derivative still reaches
    the fp32 weights; strides and uneven padding are refused by name."""
    import torch.nn.functional as F

    from facegan.networks import conv
    torch.manual_seed(0)
    x, w0 = torch.randn(2, 8, 6, 6), torch.randn(8, 2, 3, 3)
    grads = []
    for any_order in (True, False):
        w = w0.clone().requires_grad_(True)
        xr = x.clone().requires_grad_(True)
        with torch.autocast("cpu", torch.bfloat16):
            y = conv.conv2d(xr, w, None, 1, 4, any_order=any_order)
            assert y.dtype == torch.bfloat16
            torch.testing.assert_close(y, F.conv2d(xr, w, padding=1, groups=4))
        (gx,) = torch.autograd.grad(y.float().sum(), xr, create_graph=True)
        gx.square().sum().backward()
        assert w.grad is not None and w.grad.dtype == torch.float32
        grads.append(w.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=2e-2, atol=2e-2)  # bf16 rounding apart
    for bad in (dict(stride=2, padding=1), dict(padding="same"), dict(padding=(1, 0))):
        with pytest.raises(ValueError, match="stride 1, dilation 1 and one zero padding"):
            conv.Conv2d(4, 4, 3, **bad)


def test_specs_round_trip_and_options():
    g_spec, d_spec = networks.make_specs("dcgan", 64, 100, 32, 48, {"d_spectral_norm": True, "d_batchnorm": False})
    assert g_spec == {"arch": "dcgan", "kwargs": {"resolution": 64, "z_dim": 100, "width": 32}}
    assert d_spec == {"arch": "dcgan", "kwargs": {"resolution": 64, "width": 48, "batchnorm": False,
                                                  "spectral_norm": True}}
    g, d = networks.build("generator", g_spec), networks.build("discriminator", d_spec)
    assert g.spec == g_spec and g.spec is not g_spec and d.spec == d_spec
    assert networks.has_batchnorm(g) and not networks.has_batchnorm(d)
    assert networks.has_batchnorm(dcgan()[1])
    kind, default, help_text, archs = networks.option_fields()["d_batchnorm"]
    assert (kind, default, archs) == (bool, True, ["dcgan"]) and help_text.startswith("BatchNorm in D's")


@pytest.mark.parametrize("call, message", [
    (lambda: networks.make_specs("foo", 32, 16, 8, 8, {}),
     "arch 'foo': unknown; registered: dcgan, resnet, r3gan, stylegan2"),
    (lambda: networks.build("generator", {"arch": "foo", "kwargs": {}}),
     "arch 'foo': unknown; registered: dcgan, resnet, r3gan, stylegan2"),
    (lambda: networks.make_specs("dcgan", 32, 16, 8, 8, {"x": 1}),
     "option 'x' is not an option of arch dcgan (its options: d_batchnorm, d_spectral_norm)"),
    (lambda: networks.build("generator", {"arch": "dcgan", "kwargs": {"ngf": 8}}),
     "generator of arch dcgan: unexpected kwarg 'ngf' (it takes: resolution, z_dim, width)"),
    (lambda: networks.build("discriminator", {"arch": "dcgan", "kwargs": {"resolution": 48}}),
     "discriminator of arch dcgan: resolution 48 is not supported; choose one of (32, 64, 128, 256)"),
    (lambda: networks.build("critic", {"arch": "dcgan", "kwargs": {}}),
     "kind 'critic': expected one of generator, discriminator"),
])
def test_spec_errors_are_one_line(call, message):
    with pytest.raises(ValueError) as e:
        call()
    assert str(e.value) == message


def test_export_round_trip_and_legacy(tmp_path):
    g, d = dcgan(d_spectral_norm=True)
    exports.export_generator(g, tmp_path / "g.safetensors", step=3)
    exports.export_discriminator(d, tmp_path / "d.safetensors")
    loaded, meta = exports.load_generator(tmp_path / "g.safetensors")
    assert meta == {"facegan_network": "generator", "spec": g.spec, "step": 3}
    assert json.loads((tmp_path / "g.json").read_text()) == meta
    z = torch.randn(4, 16)
    g.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(z), g(z))
    d2, _ = exports.load_network(tmp_path / "d.safetensors", "discriminator")
    assert d2.spec == d.spec

    legacy = tmp_path / "legacy.safetensors"  # written by facegan before specs
    old = {"facegan_network": "generator", "config": {"resolution": 32, "z_dim": 16, "ngf": 8}}
    save_file(exports.cpu_tensors(g), str(legacy), metadata={"facegan": json.dumps(old)})
    old_g, meta = exports.load_generator(legacy)
    assert meta["spec"] == {"arch": "dcgan", "kwargs": {"resolution": 32, "z_dim": 16, "width": 8}}
    with torch.no_grad():
        assert torch.equal(old_g.eval()(z), g(z))
    old = {"facegan_network": "discriminator",
           "config": {"resolution": 32, "ndf": 8, "batchnorm": True, "spectral_norm": True}}
    save_file(exports.cpu_tensors(d), str(legacy), metadata={"facegan": json.dumps(old)})
    assert exports.load_network(legacy, "discriminator")[0].spec == d.spec


def test_unknown_arch_in_file_is_one_line(tmp_path):
    g, _ = dcgan()
    g.spec = {"arch": "gone", "kwargs": {}}
    exports.export_generator(g, tmp_path / "g.safetensors")
    with pytest.raises(ValueError, match=r"^\S+g\.safetensors: arch 'gone': unknown; registered: dcgan, resnet, r3gan"):
        exports.load_generator(tmp_path / "g.safetensors")


def test_warm_start_refuses_another_spec(tmp_path):
    g, _ = dcgan()
    exports.export_generator(g, tmp_path / "g.safetensors")
    same, _ = dcgan()
    exports.warm_start(same, tmp_path / "g.safetensors", "generator")
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), g.state_dict().values()))
    wider = networks.build("generator", networks.make_specs("dcgan", 32, 16, 16, 8, {})[0])
    with pytest.raises(ValueError) as e:
        exports.warm_start(wider, tmp_path / "g.safetensors", "generator")
    assert "\n" not in str(e.value)
    assert str(e.value).endswith("cannot warm-start this generator with spec "
                                 "{'arch': 'dcgan', 'kwargs': {'resolution': 32, 'z_dim': 16, 'width': 16}}")


TINY_ARCH = '''
"""A tiny MLP arch: the smallest thing the registry accepts."""
from dataclasses import dataclass

import torch
from torch import nn

from facegan.networks import DiscriminatorNet, GeneratorNet


@dataclass(frozen=True)
class Options:
    g_hidden: int = 12  # hidden units of G
    d_slope: float = 0.1  # LeakyReLU slope in D


class Generator(GeneratorNet):
    def __init__(self, resolution=32, z_dim=8, width=4, hidden=12):
        super().__init__()
        self.resolution, self.z_dim = resolution, z_dim
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, 3 * resolution**2), nn.Tanh())

    def forward(self, z, c=None):
        return self.net(z).view(-1, 3, self.resolution, self.resolution)


class Discriminator(DiscriminatorNet):
    def __init__(self, resolution=32, width=4, slope=0.1):
        super().__init__()
        self.resolution = resolution
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * resolution**2, width), nn.LeakyReLU(slope),
                                 nn.Linear(width, 1))

    def forward(self, x, c=None):
        return self.net(x).flatten()
'''


def test_an_arch_is_one_module_and_one_registry_line(tmp_path, monkeypatch):
    (tmp_path / "tiny_mlp_arch.py").write_text(textwrap.dedent(TINY_ARCH))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(networks.ARCHS, "mlp", "tiny_mlp_arch")

    fields = networks.option_fields()
    assert fields["g_hidden"] == (int, 12, "hidden units of G", ["mlp"])
    assert fields["d_slope"][1:] == (0.1, "LeakyReLU slope in D", ["mlp"])
    g_spec, d_spec = networks.make_specs("mlp", 32, 8, 4, 6, {"g_hidden": 5})
    assert g_spec["kwargs"] == {"resolution": 32, "z_dim": 8, "width": 4, "hidden": 5}
    assert d_spec["kwargs"] == {"resolution": 32, "width": 6, "slope": 0.1}
    g, d = networks.build("generator", g_spec), networks.build("discriminator", d_spec)
    z = torch.randn(2, g.z_dim)
    assert d(g(z, networks.no_attributes(z)), networks.no_attributes(z)).shape == (2,)
    assert not networks.has_batchnorm(d) and networks.to_channels_last(g) is g

    exports.export_generator(g, tmp_path / "g.safetensors")
    loaded, meta = exports.load_generator(tmp_path / "g.safetensors")
    assert meta["spec"] == g_spec and type(loaded).__module__ == "tiny_mlp_arch"
    z = torch.randn(3, 8)
    assert torch.equal(loaded(z), g(z))
    # An arch that does not take the one interface is named in one line.
    (tmp_path / "tiny_plain_arch.py").write_text(textwrap.dedent(TINY_ARCH).replace("(GeneratorNet)", "(nn.Module)"))
    monkeypatch.setitem(networks.ARCHS, "plain", "tiny_plain_arch")
    with pytest.raises(ValueError) as refused:
        networks.build("generator", networks.make_specs("plain", 32, 8, 4, 6, {})[0])
    assert str(refused.value) == ("arch 'plain': tiny_plain_arch.Generator must subclass facegan.networks."
                                  "GeneratorNet (the one way to call a generator: G(z, c))")


@pytest.mark.parametrize("resolution", networks.RESOLUTIONS)
def test_stylegan2_shapes_truncation_and_layout(resolution):
    """Shapes at every resolution and one w per layer; psi 0 gives the average face whatever the
    z (eval mode: fixed noise); psi 1 is no truncation; the same numbers in channels_last; with the
    minibatch stddev off, D's logit of an image does not depend on its batch."""
    torch.manual_seed(0)
    g_spec, d_spec = networks.make_specs("stylegan2", resolution, z_dim=16, ngf=8, ndf=8,
                                         options={"d_mbstd_group": 0})
    g, d = networks.build("generator", g_spec), networks.build("discriminator", d_spec)
    assert g.num_ws == 2 * int(math.log2(resolution)) - 2 and g.w_avg.shape == (g.w_dim,)
    g.train()
    g(torch.randn(8, 16))  # w_avg follows the mean w while training
    assert g.w_avg.abs().sum() > 0
    g.eval()
    z = torch.randn(3, 16)
    with torch.no_grad():
        images, logits = g(z), d(g(z))
        assert images.shape == (3, 3, resolution, resolution) and logits.shape == (3,)
        torch.testing.assert_close(g(z, psi=1.0), images)
        average = g(torch.randn(5, 16) * 3, psi=0.0)
        torch.testing.assert_close(average, average[:1].expand(5, -1, -1, -1))
        assert not torch.allclose(images[0], images[1])
        torch.testing.assert_close(d(images[1:2]), logits[1:2], atol=1e-5, rtol=1e-4)
        g, d = networks.to_channels_last(g), networks.to_channels_last(d)
        torch.testing.assert_close(g(z), images, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(d(images.contiguous(memory_format=torch.channels_last)), logits,
                                   atol=1e-5, rtol=1e-4)


def test_stylegan2_mixing_changes_only_the_layers_after_the_cutoff():
    """ws whose rows differ from layer c on: every synthesis layer before c computes the same
    activations, every one from c on differs; and training's mixing draws exactly such ws."""
    torch.manual_seed(0)
    g = networks.build("generator", networks.make_specs("stylegan2", 32, 16, 8, 8, {})[0]).eval()
    seen: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda m, i, o: seen.append(o)) for layer in g.layers]
    with torch.no_grad():
        a, b = (g.map(torch.randn(2, 16))[:, None].expand(-1, g.num_ws, -1) for _ in range(2))
        for cutoff in (1, 4, g.num_ws - 1):
            seen.clear()
            g.synthesis(a)
            g.synthesis(torch.cat([a[:, :cutoff], b[:, cutoff:]], 1))
            plain, mixed = seen[:len(g.layers)], seen[len(g.layers):]
            for j, (x, y) in enumerate(zip(plain, mixed)):
                assert torch.equal(x, y) == (j < cutoff), (cutoff, j)
    for hook in hooks:
        hook.remove()
    g.train()
    g.mixing = 1.0  # (0.9 by default: the draw below would mix or not by chance)
    ws = g.mix(a.clone(), torch.randn(2, 16))
    changed = (ws != a).any(2).any(0).tolist()
    cut = changed.index(True)
    assert 1 <= cut < g.num_ws and all(changed[cut:]) and not any(changed[:cut])


def test_sample_psi_and_style_mixing_figure(tmp_path, capsys):
    """python -m facegan.sample on a stylegan2 export: --psi 0 gives the same face in every tile;
    --style-mix 2x3 is a 3x4 grid (sources on top, faces on the left, the corner black);
    --interpolate walks in W between the grid's samples; a dcgan export refuses --psi and
    --style-mix in one line each."""
    from facegan import sample
    from facegan.networks.exports import export_generator

    torch.manual_seed(0)
    for arch in ("stylegan2", "dcgan"):
        g = networks.build("generator", networks.make_specs(arch, 32, 16, 8, 8, {})[0])
        export_generator(g, tmp_path / f"{arch}.safetensors", step=0)
    style = str(tmp_path / "stylegan2.safetensors")

    def tiles(path: Path, rows: int, cols: int) -> list[list[np.ndarray]]:
        pixels = np.asarray(Image.open(path))
        assert pixels.shape == (rows * 34 + 2, cols * 34 + 2, 3)
        return [[pixels[2 + 34 * r:34 * (r + 1), 2 + 34 * c:34 * (c + 1)] for c in range(cols)] for r in range(rows)]

    assert sample.main(["--generator", style, "--out", str(tmp_path / "avg.png"), "--psi", "0", "--num", "4"]) == 0
    faces = [t for row in tiles(tmp_path / "avg.png", 2, 2) for t in row]
    assert all(np.array_equal(faces[0], f) for f in faces[1:]) and faces[0].std() > 0
    assert sample.main(["--generator", style, "--out", str(tmp_path / "psi.png"), "--psi-sweep", "1,0", "--num",
                        "3"]) == 0
    top, average = tiles(tmp_path / "psi.png", 2, 3)  # psi 1: the grid's faces; psi 0: the average face thrice
    assert np.array_equal(average[0], faces[0]) and all(np.array_equal(average[0], f) for f in average[1:])
    assert not np.array_equal(top[0], top[1])
    assert sample.main(["--generator", style, "--out", str(tmp_path / "mix.png"), "--style-mix", "2x3"]) == 0
    grid = tiles(tmp_path / "mix.png", 3, 4)
    assert grid[0][0].max() == 0  # the corner
    assert not np.array_equal(grid[1][0], grid[2][0]) and not np.array_equal(grid[0][1], grid[0][2])
    assert not np.array_equal(grid[1][1], grid[1][0]) and not np.array_equal(grid[1][1], grid[0][1])  # a mix
    # A walk in W runs on a straight line from G(z_i) to G(z_num+i): its ends are those samples.
    assert sample.main(["--generator", style, "--out", str(tmp_path / "grid.png"), "--num", "4"]) == 0
    assert sample.main(["--generator", style, "--out", str(tmp_path / "walk.png"), "--interpolate", "--num", "2",
                        "--steps", "3"]) == 0
    grid, walk = tiles(tmp_path / "grid.png", 2, 2), tiles(tmp_path / "walk.png", 2, 3)
    samples = [t for row in grid for t in row]

    def close(a: np.ndarray, b: np.ndarray) -> bool:  # a batch of another size may round a pixel the other way
        return np.abs(a.astype(int) - b.astype(int)).max() <= 1

    for i in range(2):
        assert close(walk[i][0], samples[i]) and close(walk[i][2], samples[2 + i])
        assert not close(walk[i][1], samples[i])
    capsys.readouterr()
    dcgan = str(tmp_path / "dcgan.safetensors")
    for flags in (["--psi", "0.5"], ["--style-mix", "2x2"], ["--psi-sweep", "1,0.5"]):
        assert sample.main(["--generator", dcgan, "--out", str(tmp_path / "x.png"), *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "(dcgan) has no W space" in err, err


def test_256_px_from_pack_to_every_d(tmp_path):
    """256 px end to end in shape: packed shards at 256 px stream 256 px batches that D of every
    arch scores (training there is not measured on this CPU)."""
    from facegan.data.pack import pack
    from facegan.data.samples import TrainSpec
    from facegan.data.sources.synthetic import SyntheticSource
    from facegan.data.stream import train_loader

    shards = tmp_path / "s256"
    assert pack(SyntheticSource(4, seed=0, size=256), shards, size=256, shard_size=2, progress=False)["size"] == 256
    batch = next(iter(train_loader(shards, TrainSpec(2), num_workers=0)))["image"]
    assert batch.shape == (2, 3, 256, 256)
    for arch in networks.ARCHS:
        d = networks.build("discriminator", networks.make_specs(arch, 256, 16, 4, 4, {})[1]).eval()
        with torch.no_grad():
            assert d(batch).shape == (2,), arch
