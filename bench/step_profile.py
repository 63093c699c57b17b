"""Where a recipe's training step spends its time, and what the usual suspects cost.

    python bench/step_profile.py --recipe modern --size 64        # on a GPU

Prints, for facegan's step (bench/train_step.py's `facegan_step`) of the recipe at --size:
  1. img/s of the whole step under variants, timed in turns: as train() runs it; with
     cudnn.benchmark; without channels_last; for r3gan with nn.Conv2d's own derivatives instead
     of facegan.networks.conv's; without ADA's augmentations (at --ada-p);
  2. the top operators by device (or CPU) time over a few profiled steps (torch.profiler);
  3. img/s of the pieces of a step alone: G forward+backward, D forward+backward, R1's double
     backward, ADA's augmentation at p 0.5;
  4. for r3gan, the pieces and the whole step under each way of writing its resampling and
     convolutions (`--kernels` runs this part alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quality import RECIPES  # noqa: E402
from train_step import facegan_step, img_rate, interleaved, random_batch, recipe_config, sync  # noqa: E402

from facegan import networks  # noqa: E402
from facegan.networks import conv  # noqa: E402
from facegan.training.ada import augment  # noqa: E402


def timed(fn, device: torch.device, steps: int, warmup: int, rounds: int, images: int) -> float:
    """Median img/s of `fn()` (which handles `images` images) over rounds of `steps` calls."""
    img_rate(fn, device, warmup, images)
    return statistics.median(img_rate(fn, device, steps, images) for _ in range(rounds))


def pieces(cfg, args, device: torch.device) -> dict:
    """name -> a function running one piece of a step on one batch (G and D built afresh)."""
    g_spec, d_spec = cfg.network_specs(args.size)
    g = networks.build("generator", g_spec).to(device)
    d = networks.build("discriminator", d_spec).to(device)
    if cfg.channels_last:
        g, d = networks.to_channels_last(g), networks.to_channels_last(d)
    z = torch.randn(cfg.batch_size, cfg.z_dim, device=device)
    x = random_batch(cfg, args.size, device)

    def ac():
        return torch.autocast(device.type, torch.bfloat16, enabled=args.precision == "bf16")

    def g_fb():
        with ac():
            out = g(z)
        out.float().square().mean().backward()

    def d_fb():
        with ac():
            out = d(x)
        out.float().mean().backward()

    def r1():
        xr = x.detach().requires_grad_(True)
        with ac():
            out = d(xr)
        (grad,) = torch.autograd.grad(out.float().sum(), xr, create_graph=True)
        grad.square().sum().backward()

    def aug_fb():
        xr = x.detach().requires_grad_(True)
        augment(xr, 0.5).float().square().mean().backward()

    return {"G forward+backward": g_fb, "D forward+backward": d_fb, "R1 (D double backward)": r1,
            "ADA augment p 0.5, fwd+bwd": aug_fb}


def kernel_choices(cfg, args, device: torch.device) -> None:
    """r3gan's resampling (elementwise passes or depthwise convs) and convolutions (conv.Conv2d's
    any-order derivatives or nn.Conv2d's own) in each combination: pieces and whole step. On a CPU
    conv.Conv2d is F.conv2d itself, so there the two conv rows differ only by noise."""
    from facegan.networks import r3gan

    def down_any_order(self, x):  # stride-1 depthwise conv with any-order derivatives, then subsample
        kernel = self.kernel.to(x.dtype).expand(x.shape[1], 1, 3, 3)
        return conv.conv2d(x, kernel, None, 1, x.shape[1], any_order=True)[..., ::2, ::2]

    ways = {"up conv, down conv": lambda self, x: self.conv(x),
            "up elementwise, down elementwise": lambda self, x: (r3gan.upsample(x) if self.up
                                                                 else r3gan.downsample(x)),
            "up conv, down elementwise": lambda self, x: self.conv(x) if self.up else r3gan.downsample(x),
            "up conv, down any-order conv": lambda self, x: self.conv(x) if self.up else down_any_order(self, x)}
    own_lowpass, own_conv = r3gan.LowPass.forward, conv.Conv2d.forward
    print("4. r3gan kernel choices (img/s): resampling; conv.Conv2d (any order) or nn.Conv2d", flush=True)
    for convs in ("any-order", "nn.Conv2d"):
        conv.Conv2d.forward = own_conv if convs == "any-order" else nn.Conv2d.forward
        for way, forward in ways.items():
            r3gan.LowPass.forward = forward
            torch.manual_seed(0)
            step = facegan_step(cfg, args.size)
            if step.gan_step.ada is not None:
                step.gan_step.ada.p = args.ada_p
            real = random_batch(cfg, args.size, device)
            figures = {name: timed(fn, device, args.steps, args.warmup, args.rounds, cfg.batch_size)
                       for name, fn in pieces(cfg, args, device).items() if not name.startswith("ADA")}
            figures["whole step"] = timed(lambda step=step, real=real: step(real), device, args.steps, args.warmup,
                                          args.rounds, cfg.batch_size)
            print(f"  {convs:<10} {way:<34}" + "  ".join(f"{k} {v:.0f}" for k, v in figures.items()), flush=True)
    r3gan.LowPass.forward, conv.Conv2d.forward = own_lowpass, own_conv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cuda = torch.cuda.is_available()
    p.add_argument("--recipe", default="modern", choices=list(RECIPES), help="a recipe of bench/quality.py")
    p.add_argument("--size", type=int, default=64 if cuda else 32, help="image size (the preset's values for it)")
    p.add_argument("--steps", type=int, default=30 if cuda else 3, help="timed steps (or calls) per round")
    p.add_argument("--warmup", type=int, default=10 if cuda else 1, help="untimed steps before the first round")
    p.add_argument("--rounds", type=int, default=3, help="rounds per figure (median reported)")
    p.add_argument("--precision", default="bf16" if cuda else "no", choices=("no", "bf16"),
                   help="bf16 autocast or none")
    p.add_argument("--ada-p", type=float, default=0.3, help="ADA's p during the timing (a fresh run has 0)")
    p.add_argument("--kernels", action="store_true", help="only part 4: r3gan's kernel choices")
    args = p.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    cfg = recipe_config(args.recipe, args.size, device, args.precision)
    print(f"{torch.cuda.get_device_name() if cuda else 'CPU'}; torch {torch.__version__}; {args.recipe} at "
          f"{args.size} px: {cfg.arch}, widths {cfg.ngf}/{cfg.ndf}, batch {cfg.batch_size}, {cfg.loss}, "
          f"options {cfg.arch_options}, precision {args.precision}", flush=True)

    if args.kernels:
        kernel_choices(cfg, args, device)
        return

    # 1. The whole step under variants: (config, cudnn.benchmark, PyTorch's own conv in r3gan).
    variants = {"as train() runs it": (cfg, False, False), "cudnn.benchmark": (cfg, True, False),
                "no channels_last": (dataclasses.replace(cfg, channels_last=False), False, False)}
    if cfg.arch == "r3gan":  # before facegan.networks.conv: nn.Conv2d's own (per-group) second derivative
        variants["nn.Conv2d's double backward"] = (cfg, False, True)
    if cfg.ada:
        variants["no ADA"] = (dataclasses.replace(cfg, ada=False), False, False)
    own_conv = conv.Conv2d.forward
    steps, contenders = {}, []
    for name, (vcfg, bench, torch_conv) in variants.items():
        torch.manual_seed(0)
        step = facegan_step(vcfg, args.size)
        if step.gan_step.ada is not None:
            step.gan_step.ada.p = args.ada_p
        steps[name] = step

        def in_variant(real, step=step, bench=bench, torch_conv=torch_conv):  # its settings, then the step
            torch.backends.cudnn.benchmark = bench
            conv.Conv2d.forward = nn.Conv2d.forward if torch_conv else own_conv
            step(real)

        contenders.append((name, in_variant, random_batch(vcfg, args.size, device)))
    results = dict(interleaved(contenders, device, args.steps, args.warmup, args.rounds))
    conv.Conv2d.forward = own_conv
    print(f"\n1. whole step (ADA p {args.ada_p} where the recipe has ADA)")
    base = results["as train() runs it"]
    for name, value in results.items():
        print(f"  {name:<28}{value:>9.0f} img/s {value / base:>6.2f}x", flush=True)

    # 2. Top operators.
    torch.backends.cudnn.benchmark = False
    step, real = steps["as train() runs it"], contenders[0][2]
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(max(args.steps // 3, 2)):
            step(real)
        sync(device)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print("\n2. top operators by self time")
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=50))

    # 3. Pieces.
    print("3. pieces (img/s)")
    for name, fn in pieces(cfg, args, device).items():
        for bench in (False, True):
            torch.backends.cudnn.benchmark = bench
            value = timed(fn, device, args.steps, args.warmup, args.rounds, cfg.batch_size)
            print(f"  {name:<28} benchmark {bench!s:<5} {value:>9.0f}", flush=True)
    if cfg.arch == "r3gan":
        kernel_choices(cfg, args, device)


if __name__ == "__main__":
    main()
