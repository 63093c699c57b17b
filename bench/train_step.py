"""Training speed: facegan's step and loop against a bare PyTorch DCGAN loop, side by side.

    python bench/train_step.py            # CPU: 32 px, widths 32, batch 64 (quick)
    python bench/train_step.py --size 64 --width 64 --batch 128   # the DCGAN of the paper

Every row trains the same DCGAN (facegan.networks' dcgan arch at the same widths) with the same
batch and Adam settings. Rows, in one process, interleaved over --rounds rounds (median reported):

  bare loop                the PyTorch DCGAN example's step: D real+fake backward, D step,
                           G backward through D, G step; in-memory batch; no logging
  bare loop, same opts     the same with facegan's memory layout and optimizer settings
  facegan GANStep          facegan's step (facegan.training.step.GANStep as facegan.training.loop.make_step builds it
                           and facegan.training.losses' bce: Accelerate, no_sync, frozen D, lr schedule,
                           on-device stats) on the same in-memory batch

With --recipes dcgan,strong,resnet,modern it times instead facegan's step for each recipe of the
quality study (bench/quality.py's RECIPES: the presets as users run them, at --size with the
presets' own widths, batch, loss, regularisers, EMA and ADA), interleaved the same way, each
against the first. ADA's p starts at 0 there, as in a fresh run.

With --end-to-end (the default on a GPU) it adds rows that read real images from disk:

  DCGAN example config     fp32, NCHW, foreach Adam, ImageFolder decoding the 178x218 CelebA
                           JPEGs with Resize/CenterCrop/Normalize in DataLoader workers
  facegan train(), ...     facegan's own loop (facegan.training.loop.train) on shards packed
                           from the same JPEGs, img/s as its metrics.jsonl reports it; once
                           with one batch per loader-worker message (the old way), once with
                           facegan.data.stream.BATCHES_PER_MESSAGE (the default)
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import facegan.data.stream  # noqa: E402
from facegan import networks  # noqa: E402
from facegan.runtime import make_accelerator  # noqa: E402
from facegan.train import config_from_args  # noqa: E402
from facegan.training.config import TrainConfig  # noqa: E402
from facegan.training.loop import make_loss, make_models, make_step, train  # noqa: E402
from facegan.training.presets import DCGAN  # noqa: E402
from facegan.training.state import RunState  # noqa: E402

DEFAULT_CELEBA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-sample"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class BareLoop:
    """The PyTorch DCGAN example's training step, nothing else (BCE on logits, labels 0.9/0)."""

    def __init__(self, cfg: TrainConfig, size: int, device: torch.device, same_opts: bool):
        torch.manual_seed(0)
        g_spec, d_spec = cfg.network_specs(size)
        g, d = networks.build("generator", g_spec), networks.build("discriminator", d_spec)
        if same_opts and cfg.channels_last:
            g, d = networks.to_channels_last(g), networks.to_channels_last(d)
        self.g, self.d = g.to(device), d.to(device)
        fused = (cfg.fused_adam or None) if same_opts else None
        self.opt_g = torch.optim.Adam(self.g.parameters(), cfg.lr_g, betas=(cfg.beta1, cfg.beta2), fused=fused)
        self.opt_d = torch.optim.Adam(self.d.parameters(), cfg.lr_d, betas=(cfg.beta1, cfg.beta2), fused=fused)
        if same_opts and cfg.compile != "off":
            self.g.compile(mode=cfg.compile)
            self.d.compile(mode=cfg.compile)
        self.mark_step = same_opts and cfg.compile == "reduce-overhead"
        self.cfg, self.device = cfg, device
        self.autocast = cfg.mixed_precision == "bf16"

    def step(self, real: torch.Tensor) -> None:
        cfg, g, d = self.cfg, self.g, self.d
        if self.mark_step:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            z = torch.randn(real.shape[0], cfg.z_dim, device=real.device)
            fake = g(z)
            self.opt_d.zero_grad(set_to_none=True)
            out = d(real)
            F.binary_cross_entropy_with_logits(out.float(), torch.full_like(out, cfg.real_label,
                                                                            dtype=torch.float32)).backward()
            out = d(fake.detach())
            F.binary_cross_entropy_with_logits(out.float(), torch.zeros_like(out, dtype=torch.float32)).backward()
            self.opt_d.step()
            self.opt_g.zero_grad(set_to_none=True)
            out = d(fake)
            F.binary_cross_entropy_with_logits(out.float(), torch.ones_like(out, dtype=torch.float32)).backward()
            self.opt_g.step()


def img_rate(fn, device: torch.device, steps: int, images: int) -> float:
    """img/s of `steps` calls of `fn()`, each handling `images` images."""
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return steps * images / (time.perf_counter() - start)


def rate(step, real: torch.Tensor, steps: int, device: torch.device) -> float:
    return img_rate(lambda: step(real), device, steps, real.shape[0])


def facegan_step(cfg: TrainConfig, size: int):
    """facegan's step as train() builds it, as a function of one in-memory batch."""
    acc = make_accelerator(cpu=cfg.cpu, mixed_precision=cfg.mixed_precision, deterministic=cfg.deterministic)
    models = make_models(cfg, acc, size)
    gan_step = make_step(cfg, acc, models, make_loss(cfg))
    state = RunState(total_nimg=10**15)  # never reached: the lr schedule stays put

    def step(real: torch.Tensor) -> None:
        gan_step(itertools.repeat(real), state)  # the step takes d_steps x accumulate batches (1 here)

    step.gan_step = gan_step  # for benches that set its state (ADA's p)
    return step


def interleaved(contenders: list[tuple[str, object, torch.Tensor]], device: torch.device, steps: int,
                warmup: int, rounds: int) -> list[tuple[str, float]]:
    """Median img/s of each (name, step, batch), timed in turns so that drifts in clock or load hit
    every row alike."""
    for _, step, batch in contenders:  # warm-up (and compilation)
        rate(step, batch, warmup, device)
    results: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
    for _ in range(rounds):
        for name, step, batch in contenders:
            results[name].append(rate(step, batch, steps, device))
    return [(name, statistics.median(values)) for name, values in results.items()]


def random_batch(cfg: TrainConfig, size: int, device: torch.device) -> torch.Tensor:
    real = torch.rand(cfg.batch_size, 3, size, size, device=device) * 2 - 1
    return real.contiguous(memory_format=torch.channels_last) if cfg.channels_last else real


def in_memory_rows(cfg: TrainConfig, size: int, device: torch.device, steps: int, warmup: int,
                   rounds: int) -> list[tuple[str, float]]:
    real_cl = random_batch(cfg, size, device)  # one batch: NCHW for the bare loop, facegan's layout for the rest
    bare, same = BareLoop(cfg, size, device, False), BareLoop(cfg, size, device, True)
    return interleaved([("bare loop (NCHW, foreach Adam)", bare.step, real_cl.contiguous()),
                        ("bare loop, same opts as facegan", same.step, real_cl),
                        ("facegan GANStep", facegan_step(cfg, size), real_cl)],
                       device, steps, warmup, rounds)


def recipe_config(name: str, size: int, device: torch.device, precision: str, compile_mode: str = "off"
                  ) -> TrainConfig:
    """The config of bench/quality.py's recipe `name` as train.py would make it at `size` px."""
    from quality import RECIPES  # bench/quality.py

    flags = [*RECIPES[name], "--data", "-", "--run-dir", "-", "--mixed-precision", precision,
             "--compile", compile_mode, "--cpu", str(device.type == "cpu")]
    return config_from_args(flags, resolution=size)[0]


def recipe_rows(names: list[str], size: int, device: torch.device, args) -> list[tuple[str, float]]:
    """facegan's step for each of the quality study's recipes, as their presets set it up at `size`."""
    contenders = []
    for name in names:
        cfg = recipe_config(name, size, device, args.precision, args.compile)
        torch.manual_seed(0)
        label = (f"{name} ({cfg.arch}, widths {cfg.ngf}/{cfg.ndf}, batch {cfg.batch_size}, {cfg.loss}"
                 f"{', EMA' if cfg.ema else ''}{', ADA' if cfg.ada else ''})")
        contenders.append((label, facegan_step(cfg, size), random_batch(cfg, size, device)))
    return interleaved(contenders, device, args.steps, args.warmup, args.rounds)


# ---------------------------------------------------------------------------------------------
# End to end on GPU: the example's configuration against facegan's loop, both reading images.


def example_config_rate(cfg: TrainConfig, celeba: Path, size: int, workers: int, steps: int,
                        warmup: int, device: torch.device) -> float:
    from loader import imagefolder_loader  # bench/loader.py: the example's ImageFolder pipeline

    base = dataclasses.replace(cfg, mixed_precision="no", compile="off")
    loop = BareLoop(base, size, device, same_opts=False)
    loader = imagefolder_loader(celeba, size, cfg.batch_size, workers)

    def batches():
        while True:
            for images, _ in loader:
                yield images

    it = batches()
    for _ in range(warmup):
        loop.step(next(it).to(device, non_blocking=True))
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        loop.step(next(it).to(device, non_blocking=True))
    sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - start)


def facegan_train_rate(cfg: TrainConfig, shards: Path, steps: int, warmup: int, batches_per_message: int) -> float:
    """facegan's own loop; img/s from metrics.jsonl, leaving out the first (warm-up) interval."""
    with tempfile.TemporaryDirectory() as run, mock.patch.object(facegan.data.stream, "BATCHES_PER_MESSAGE",
                                                                 batches_per_message):
        run_cfg = dataclasses.replace(cfg, data=str(shards), run_dir=run, max_steps=warmup + steps, log_every=warmup,
                                      ckpt_every=10**9, sample_every=10**9, resume="none")
        train(run_cfg)
        records = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["img/s"] for r in records[1:])


def pack_celeba(celeba: Path, out: Path, size: int, workers: int) -> Path:
    from facegan.data.pack import pack
    from facegan.data.sources.celeba import CelebASource

    pack(CelebASource(celeba, "all"), out, size=size, workers=workers, progress=False)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cuda = torch.cuda.is_available()
    p.add_argument("--size", type=int, default=64 if cuda else 32)
    p.add_argument("--width", type=int, default=64 if cuda else 32, help="ngf = ndf")
    p.add_argument("--batch", type=int, default=128 if cuda else 64)
    p.add_argument("--steps", type=int, default=200 if cuda else 20, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=50 if cuda else 5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--precision", choices=("no", "bf16"), default="bf16" if cuda else "no")
    p.add_argument("--compile", default="off", choices=("off", "default", "reduce-overhead", "max-autotune"),
                   help="torch.compile mode for G and D (facegan and 'same opts' rows)")
    p.add_argument("--celeba", type=Path, default=DEFAULT_CELEBA,
                   help="CelebA root (official layout) for the end-to-end rows")
    p.add_argument("--workers", type=int, default=8, help="loader workers for the end-to-end rows")
    p.add_argument("--cpu", action="store_true", help="stay on the CPU even where a GPU is present")
    p.add_argument("--end-to-end", action=argparse.BooleanOptionalAction, default=None,
                   help="add the example-config and train() rows (default: on a GPU only)")
    p.add_argument("--train-rounds", type=int, default=1, help="train() runs per train() row (median reported)")
    p.add_argument("--recipes", default="", help="comma list of bench/quality.py's recipes: time facegan's step "
                   "for each (their presets at --size; --width and --batch do not apply) instead of the DCGAN rows")
    args = p.parse_args()
    if args.train_rounds < 1:
        p.error(f"--train-rounds must be at least 1, got {args.train_rounds}")
    device = torch.device("cuda" if cuda and not args.cpu else "cpu")
    end_to_end = args.end_to_end if args.end_to_end is not None else device.type == "cuda" and not args.recipes
    if end_to_end and args.recipes:
        p.error("--recipes times the step on in-memory batches: drop --end-to-end")
    if end_to_end and args.steps % args.warmup:  # train() logs img/s every --warmup steps
        p.error(f"--steps ({args.steps}) must be a multiple of --warmup ({args.warmup}) for the train() rows")
    cfg = dataclasses.replace(DCGAN, ngf=args.width, ndf=args.width, batch_size=args.batch,
                              mixed_precision=args.precision, compile=args.compile, cpu=device.type == "cpu",
                              num_workers=args.workers)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    if args.recipes:
        from quality import RECIPES

        names = args.recipes.split(",")
        unknown = [n for n in names if n not in RECIPES]
        if unknown:
            p.error(f"--recipes: unknown {', '.join(unknown)}; expected some of {', '.join(RECIPES)}")
        print(f"{name}; torch {torch.__version__}; facegan's step per recipe at {args.size} px, precision "
              f"{args.precision}, compile {args.compile}; {args.rounds} rounds x {args.steps} steps after "
              f"{args.warmup} warm-up steps", flush=True)
        rows = recipe_rows(names, args.size, device, args)
        width = max(len(label) for label, _ in rows) + 2
        print(f"{'row':<{width}}{'img/s':>9}{'vs first':>10}")
        for label, value in rows:
            print(f"{label:<{width}}{value:>9.0f}{value / rows[0][1]:>9.2f}x")
        return
    print(f"{name}; torch {torch.__version__}; DCGAN {args.size} px, widths {args.width}, z {cfg.z_dim}, "
          f"batch {args.batch}, precision {args.precision}, compile {args.compile}; "
          f"{args.rounds} rounds x {args.steps} steps after {args.warmup} warm-up steps", flush=True)
    rows = in_memory_rows(cfg, args.size, device, args.steps, args.warmup, args.rounds)
    bare = rows[0][1]
    same = rows[1][1]
    if end_to_end:
        if not (args.celeba / "img_align_celeba").is_dir():
            sys.exit(f"bench/train_step.py: {args.celeba}: no CelebA (img_align_celeba/) for the end-to-end rows; "
                     "pass --celeba ROOT or --no-end-to-end")
        base = example_config_rate(cfg, args.celeba, args.size, args.workers, args.steps, args.warmup, device)
        rows.insert(0, ("DCGAN example config (fp32, ImageFolder JPEG decode)", base))
        with tempfile.TemporaryDirectory() as tmp:
            shards = pack_celeba(args.celeba, Path(tmp) / "shards", args.size, args.workers)
            label = f"facegan train() ({args.precision}, channels_last, fused Adam, compile {args.compile}, npy)"
            default = facegan.data.stream.BATCHES_PER_MESSAGE
            trains: dict[str, list[float]] = {f"{label}, 1 batch per loader message": [],
                                              f"{label}, {default} per message (default)": []}
            for _ in range(args.train_rounds):  # interleaved, like the in-memory rows
                for name, per_message in zip(trains, (1, default)):
                    trains[name].append(facegan_train_rate(cfg, shards, args.steps, args.warmup, per_message))
            rows += [(name, statistics.median(values)) for name, values in trains.items()]
        bare = base
    width = max(len(label) for label, _ in rows) + 2
    print(f"{'row':<{width}}{'img/s':>9}{'vs first':>10}{'cost vs same opts':>19}")
    for label, value in rows:
        print(f"{label:<{width}}{value:>9.0f}{value / bare:>9.2f}x{same / value:>18.3f}x")


if __name__ == "__main__":
    main()
