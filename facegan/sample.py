"""Images from an exported generator: a grid, a latent walk, or individual PNGs.

    python -m facegan.sample --generator RUN/generator.safetensors --out grid.png [--num 64] [--seed S]
    python -m facegan.sample --generator G --out walk.gif --interpolate [--num 8] [--steps 16]   # in W for stylegan2
    python -m facegan.sample --generator G --images-dir DIR --num 10000   # for other FID tools
    python -m facegan.sample --generator G --out smiling.png --attributes Smiling=1,Eyeglasses=0
    python -m facegan.sample --generator G --out sweep.png --sweep Smiling,Eyeglasses [--num 8]
    python -m facegan.sample --generator G --out grid.png --psi 0.7          # a style G (stylegan2): truncation in W
    python -m facegan.sample --generator G --out psi.png --psi-sweep 1,0.7,0.4,0 [--num 8]   # a row per psi
    python -m facegan.sample --generator G --out mix.png --style-mix 4x6 [--mix-layers 0-3]
    python -m facegan.sample --generator G --export-program G.pt2 [--psi 0.7]   # torch.export.load(...) alone
                                                  # (a program is code: load only programs you made or trust)

A conditional generator's attributes not named in --attributes are drawn at random, each with
its frequency in the training shards (independently of the others).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from facegan import networks
from facegan.cli import OneLineErrors
from facegan.data import attributes as conditioning
from facegan.files import probe_folder
from facegan.networks import sampling
from facegan.networks.exports import load_generator
from facegan.networks.portable import TRUST, export_program
from facegan.networks.sampling import generate_uint8, latents
from facegan.progress import progress_bar


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrors(prog="python -m facegan.sample", description=__doc__.split("\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    p.add_argument("--generator", required=True, metavar="FILE", help="exported generator (.safetensors)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="FILE", help="the grid (.png) or the latent walk (.png grid or .gif)")
    out.add_argument("--images-dir", metavar="DIR", help="write --num individual PNGs here")
    out.add_argument("--export-program", metavar="FILE.pt2",
                     help="write G as a torch.export program that loads with torch alone (--psi baked in)")
    p.add_argument("--num", type=int, default=None,
                   help="images (grid: 64, --images-dir: 10000) or walks (--interpolate: 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=None,
                   help="redraw latent components beyond +-T (fidelity over variety; try 1.0-2.0)")
    p.add_argument("--psi", type=float, default=None,
                   help="a style generator's truncation in W: pull each w towards the average w (1: none, 0: the "
                        "average face); other archs have --truncation")
    p.add_argument("--psi-sweep", default="", metavar="PSI,...",
                   help="a style generator's truncation figure (--out .png): one row per psi, the same --num faces")
    p.add_argument("--style-mix", default="", metavar="ROWSxCOLS",
                   help="a style-mixing figure (--out .png): ROWS faces take the --mix-layers styles of COLS faces")
    p.add_argument("--mix-layers", default="0-3", metavar="A-B",
                   help="the w layers --style-mix takes from the column faces (0-3: the 4 and 8 px layers, pose and "
                        "face shape; later ones carry colours and detail)")
    p.add_argument("--interpolate", action="store_true",
                   help="a latent walk: one row per walk (.png) or one frame per step (.gif); in W (straight lines) "
                        "for a style generator, in z (spherical) for the others")
    p.add_argument("--steps", type=int, default=16, help="points along each walk")
    p.add_argument("--attributes", default="", metavar="NAME=0|1,...",
                   help="a conditional generator's attributes to fix; the others follow their training frequencies")
    p.add_argument("--sweep", default="", metavar="NAME,...",
                   help="a sweep grid (--out .png): one row per latent (--num rows, default 8), two columns per "
                        "attribute named, off then on, with z and the other attributes held")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--cpu", action="store_true", help="stay on the CPU even where a GPU is present")
    return p


# What --out draws besides the plain grid: one picture mode at a time (flag -> its attribute).
PICTURES = {"--interpolate": "interpolate", "--sweep": "sweep", "--style-mix": "style_mix", "--psi-sweep": "psi_sweep"}


@dataclass
class Job:
    """What every mode draws from, resolved once: the generator, `num` seeded latents (twice as many
    for a walk), their attributes (zero-width for an unconditional G), and the flags."""

    args: argparse.Namespace
    prog: str
    g: torch.nn.Module
    num: int
    z: torch.Tensor
    attrs: torch.Tensor  # [num, K]: a conditional G's attributes; K = 0 for an unconditional G
    names: list[str]
    swept: list[int]
    psis: list[float]
    mix: tuple[tuple[int, int], range] | None

    def say(self, text: str) -> int:
        print(f"{self.prog}: {text}", file=sys.stderr)
        return 0


def check_flags(args: argparse.Namespace, num: int) -> None:
    """The rules between flags, each one line: one picture mode at a time, and each to its output."""
    if num < 1 or args.steps < 2 or args.batch_size < 1:
        raise ValueError("--num and --batch-size must be at least 1, --steps at least 2")
    modes = [flag for flag, name in PICTURES.items() if getattr(args, name)]
    if len(modes) > 1:
        raise ValueError(f"one of {', '.join(PICTURES)} ({' and '.join(modes)} given)")
    if modes and args.images_dir:
        raise ValueError(f"{modes[0]} writes to --out, not --images-dir")
    if modes and args.export_program:
        raise ValueError(f"--export-program writes the generator itself; {modes[0]} makes a picture with --out")
    if args.out and Path(args.out).suffix.lower() not in ((".png", ".gif") if args.interpolate else (".png",)):
        raise ValueError(f"--out {args.out}: expected a .png" + (" or .gif" if args.interpolate else ""))


def probe_output(args: argparse.Namespace) -> None:
    """Make and probe where the output goes, before any work: one line for a folder under a
    regular file, a regular file where a folder should be, or a folder that cannot be written."""
    if args.images_dir:
        probe_folder(args.images_dir, "--images-dir")
    else:
        flag, path = ("--out", args.out) if args.out else ("--export-program", args.export_program)
        probe_folder(Path(path).absolute().parent, flag)


def prepare(args: argparse.Namespace, prog: str, num: int) -> Job:
    """Load the generator and draw what the modes share; ValueError for anything it cannot do."""
    g, _ = load_generator(args.generator)
    z = latents(num * (2 if args.interpolate else 1), g.z_dim, args.seed, args.truncation)
    names = networks.attributes(g)
    if (args.attributes or args.sweep) and not names:
        raise ValueError(f"{args.generator} is not conditioned on attributes (trained without --condition)")
    fixed = sampling.parse_settings(args.attributes, names)
    swept = list(sampling.parse_settings(  # indices of the swept attributes, in the order named
        ",".join(f"{n}=1" for n in conditioning.parse_condition(args.sweep)), names, "--sweep"))
    attrs = sampling.draw(g.frequencies, num, torch.Generator().manual_seed(args.seed + 1), fixed)  # [num, K]
    psis = _psi_list(args.psi_sweep) if args.psi_sweep else []
    for psi in [args.psi, *psis]:
        sampling.check_psi(g, psi, args.generator)
    mix = _mix_shape(args.style_mix, args.mix_layers, g, args.generator) if args.style_mix else None
    return Job(args, prog, g, num, z, attrs, names, swept, psis, mix)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "facegan.sample"
    default_num = 10000 if args.images_dir else 8 if args.interpolate or args.sweep or args.psi_sweep else 64
    num = args.num if args.num is not None else default_num
    try:
        check_flags(args, num)
        probe_output(args)
        job = prepare(args, prog, num)
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    if args.export_program:  # on the CPU: a program exported there runs on any machine's CPU
        return write_program(job)
    job.g = job.g.to("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    if args.images_dir:
        return write_pngs(job)
    mode = next((name for name in PICTURES.values() if getattr(args, name)), "grid")
    return {"grid": write_grid, "interpolate": write_walk, "sweep": write_sweep, "style_mix": write_style_mix,
            "psi_sweep": write_psi_sweep}[mode](job)


def write_program(job: Job) -> int:
    args = job.args
    signature = export_program(job.g, args.export_program, args.psi, source=args.generator)
    return job.say(f"wrote {args.export_program} (sha256 {signature['sha256']}) and its .json: "
                   f"torch.export.load(path).module()({', '.join(signature['inputs'])}) -> {signature['output']}. "
                   f"Note: {TRUST}")


def write_pngs(job: Job) -> int:
    """--images-dir: --num PNGs named 000000.png, ... (for other FID tools)."""
    out = Path(job.args.images_dir)  # (made by probe_output)
    bar = progress_bar(job.num, "sampling")
    index = 0
    for batch in generate_uint8(job.g, job.z, job.args.batch_size, job.attrs, job.args.psi):
        for image in batch.permute(0, 2, 3, 1).cpu().numpy():
            Image.fromarray(image).save(out / f"{index:06d}.png")
            index += 1
        bar.update(len(batch))
    bar.close()
    return job.say(f"{job.num} PNGs ({job.g.resolution} px) in {out}")


def write_grid(job: Job) -> int:
    images = torch.cat(list(generate_uint8(job.g, job.z, job.args.batch_size, job.attrs, job.args.psi))).cpu()
    sampling.grid_image(images, nrow=math.ceil(math.sqrt(job.num))).save(job.args.out)
    return job.say(f"{job.num} samples in {job.args.out}")


def write_style_mix(job: Job) -> int:
    """--style-mix ROWSxCOLS: each row's face takes the --mix-layers styles of each column's."""
    args, g = job.args, job.g
    (rows, cols), layers = job.mix
    # Each source: z, and a conditional G's attributes drawn at their training frequencies.
    fixed = sampling.parse_settings(args.attributes, job.names)
    sources = [(latents(n, g.z_dim, args.seed + k, args.truncation),
                sampling.draw(g.frequencies, n, torch.Generator().manual_seed(args.seed + 2 + k), fixed))
               for k, n in enumerate((rows, cols))]
    images = sampling.style_mix(g, *sources, layers, 1.0 if args.psi is None else args.psi)
    sampling.grid_image(images.cpu(), nrow=cols + 1).save(args.out)
    return job.say(f"{rows} faces x {cols} style sources, w layers {layers.start}-{layers.stop - 1} from the "
                   f"columns, in {args.out}")


def write_psi_sweep(job: Job) -> int:
    """--psi-sweep: one row per psi, the same faces in every row."""
    images = torch.cat([torch.cat(list(generate_uint8(job.g, job.z, job.args.batch_size, job.attrs, psi)))
                        for psi in job.psis])
    sampling.grid_image(images.cpu(), nrow=job.num).save(job.args.out)
    return job.say(f"{job.num} faces at psi {', '.join(f'{p:g}' for p in job.psis)} (one row each) in {job.args.out}")


def write_sweep(job: Job) -> int:
    """--sweep: one row per latent, each swept attribute off then on, z and the others held."""
    columns = 2 * len(job.swept)
    grid_attrs = sampling.sweep_attributes(job.attrs, job.swept)
    images = torch.cat(list(generate_uint8(job.g, job.z.repeat_interleave(columns, 0), job.args.batch_size,
                                           grid_attrs, job.args.psi)))
    sampling.grid_image(images.cpu(), nrow=columns).save(job.args.out)
    labels = ", ".join(f"{job.names[k]}=0, {job.names[k]}=1" for k in job.swept)
    return job.say(f"a sweep of {job.num} latents in {job.args.out}; columns: {labels}")


def write_walk(job: Job) -> int:
    """--interpolate: a walk per latent pair, in W (straight lines) for a style G, in z (spherical)
    for the others; a .png has a row per walk, a .gif a frame per step, there and back."""
    args, g, z, num, c = job.args, job.g, job.z, job.num, job.attrs  # c: held along each walk
    if g.space == "w":
        images = sampling.w_walk(g, z[:num], z[num:], c, args.steps, 1.0 if args.psi is None else args.psi).cpu()
    else:
        walk = sampling.slerp(z[:num], z[num:], torch.linspace(0, 1, args.steps))  # [num, steps, Z]
        images = torch.cat(list(generate_uint8(g, walk.reshape(-1, g.z_dim), args.batch_size,
                                               c.repeat_interleave(args.steps, 0)))).cpu()
    images = images.view(num, args.steps, *images.shape[1:])
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        sampling.grid_image(images.flatten(0, 1), nrow=args.steps).save(out)
    else:
        frames = [sampling.grid_image(images[:, s], nrow=math.ceil(math.sqrt(num))) for s in range(args.steps)]
        sampling.write_gif(frames + frames[-2:0:-1], out)
    return job.say(f"{num} latent walks of {args.steps} steps in {out}")


def _psi_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--psi-sweep {text!r}: expected a comma list of numbers in [0, 1], e.g. 1,0.7,0") from None


def _mix_shape(text: str, layers: str, g: torch.nn.Module, what: str) -> tuple[tuple[int, int], range]:
    """'4x6', '0-3' -> ((4, 6), range(0, 4)), checked against the generator's layers."""
    if g.space != "w":
        raise ValueError(f"--style-mix: {what} ({g.spec['arch']}) has no W space; style mixing needs a style "
                         "generator (--arch stylegan2)")
    try:
        rows, cols = (int(n) for n in text.lower().split("x"))
        first, last = (int(n) for n in layers.split("-"))
    except ValueError:
        raise ValueError(f"--style-mix {text} --mix-layers {layers}: expected ROWSxCOLS (4x6) and A-B (0-3)") from None
    if rows < 1 or cols < 1 or not 0 <= first <= last < g.num_ws:
        raise ValueError(f"--style-mix {text} --mix-layers {layers}: at least 1x1, and layers within 0-"
                         f"{g.num_ws - 1} ({what} has {g.num_ws} w layers)")
    return (rows, cols), range(first, last + 1)


if __name__ == "__main__":
    sys.exit(main())
