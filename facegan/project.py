"""Project real faces into a generator: find the latent whose image matches each target.

    python -m facegan.project --generator RUN/generator.safetensors --target face.jpg [more.jpg ...] --out DIR
        [--steps 1000] [--space w|w+|z] [--vgg16-weights vgg16-397923af.pth]

As StyleGAN2-ADA's projector (toolbox/projection.py): Adam on w (a style generator; w+ gives each
layer its own w) or z (other archs) and the noise maps, from the average face, with a ramped lr,
noise on w early on, and LPIPS-VGG as the distance. Writes, for each target NAME, into --out:
NAME-target.png (the crop that was matched), NAME-projected.png, NAME-latent.safetensors (`w`
[num_ws, w_dim] or `z`, and the noise maps: `facegan.edit apply --latent` takes it) and
NAME-progress.gif (target beside the projection as it converges), and prints one JSON line with
the final LPIPS and pixel MSE.

Targets are aligned faces: an aligned CelebA image (178x218) is centre-cropped as the generator's
training data was (its export records the crop; --crop overrides it), and a square image is
taken as an aligned face crop already; anything else is refused, since the generator only knows
centred, upright faces (align a photo with a landmark tool such as dlib's first, as FFHQ was).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file

from facegan.cli import OneLineErrors
from facegan.data.decode import to_float
from facegan.data.imaging import BadImage, crop_resize, open_rgb
from facegan.data.pack import CELEBA_CROP
from facegan.files import probe_folder
from facegan.metrics.vgg import FLAG as VGG_FLAG
from facegan.metrics.vgg import VGGWeightsError
from facegan.networks import sampling
from facegan.networks.exports import load_generator
from facegan.toolbox.projection import SPACES, ProjectOptions, check_space, project

CELEBA_ALIGNED = (178, 218)  # width, height of CelebA's aligned-and-cropped images


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrors(prog="python -m facegan.project", description=__doc__.split("\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    p.add_argument("--generator", required=True, metavar="FILE", help="exported generator (.safetensors)")
    p.add_argument("--target", required=True, nargs="+", metavar="IMAGE", help="aligned face image(s)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the outputs (made if missing)")
    p.add_argument("--steps", type=int, default=1000, help="optimisation steps per target")
    p.add_argument("--space", choices=SPACES, default=None,
                   help="latent to optimise (default: w for a style generator, z for the others)")
    p.add_argument(VGG_FLAG, default=None, metavar="PATH",
                   help="torchvision's VGG16 weights (vgg16-397923af.pth; default: torch hub's cache, downloaded)")
    p.add_argument("--crop", type=int, default=None,
                   help="side of the centre square cut from a 178x218 aligned CelebA image (default: the crop of the "
                        f"generator's training data, else facegan.pack's {CELEBA_CROP})")
    p.add_argument("--mse-weight", type=float, default=0.0, help="a pixel MSE term beside LPIPS (StyleGAN2-ADA: 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise maps and the noise on w")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def load_target(path: Path, resolution: int, crop: int) -> tuple[torch.Tensor, str]:
    """The target as [3,R,R] in [-1,1], and how it was cut; ValueError naming the file otherwise."""
    try:
        img = open_rgb(path.read_bytes())
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    except BadImage as e:
        raise ValueError(f"{path}: {e}") from None
    if img.size == CELEBA_ALIGNED:
        how = f"aligned CelebA image: centre {crop}x{crop} crop, resized to {resolution} px"
        img = crop_resize(img, crop, resolution)
    elif img.width == img.height and img.width >= resolution:
        how = f"square image taken as an aligned face crop, resized to {resolution} px"
        img = crop_resize(img, None, resolution)
    else:
        raise ValueError(f"{path}: {img.width}x{img.height} is neither an aligned CelebA image (178x218) nor a "
                         f"square aligned face crop of at least {resolution}x{resolution}; align and crop the face "
                         "first")
    pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(resolution, resolution, 3)
    return to_float(pixels.permute(2, 0, 1)[None])[0], how


def write_outputs(out: Path, name: str, target: torch.Tensor, result, info: dict) -> dict:
    paths = {k: out / f"{name}-{k}.{ext}" for k, ext in (("target", "png"), ("projected", "png"),
                                                         ("latent", "safetensors"), ("progress", "gif"))}
    target_u8 = sampling.to_uint8(target)
    Image.fromarray(target_u8.permute(1, 2, 0).numpy()).save(paths["target"])
    Image.fromarray(sampling.to_uint8(result.image).permute(1, 2, 0).numpy()).save(paths["projected"])
    meta = {**info, "lpips": result.lpips, "mse": result.mse, "space": result.space}
    save_file(result.tensors(), str(paths["latent"]), metadata={"facegan_latent": json.dumps(meta)})
    frames = [sampling.grid_image(torch.stack([target_u8, frame]), nrow=2) for frame in result.frames]
    sampling.write_gif(frames + [frames[-1]] * 10, paths["progress"])  # the result holds a while
    return {k: str(v) for k, v in paths.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "facegan.project"
    if args.steps < 1 or (args.crop is not None and args.crop < 1):
        print(f"{prog}: error: --steps and --crop must be at least 1", file=sys.stderr)
        return 2
    try:
        g, meta = load_generator(args.generator)
        space = args.space or g.space
        check_space(g, space)
        crop = args.crop or (meta.get("data") or {}).get("crop") or CELEBA_CROP
        targets = [(Path(t), *load_target(Path(t), g.resolution, crop)) for t in args.target]
        names = [t.stem for t, _, _ in targets]
        if len(set(names)) < len(names):
            raise ValueError("--target: two images share a name (" + ", ".join(sorted({n for n in names if
                                                                                       names.count(n) > 1})) +
                             "); their outputs would overwrite each other")
        out = probe_folder(args.out, "--out")  # before minutes of work, not after them
        from facegan.metrics.perceptual import LPIPS  # lpips, scipy and VGG16: after the inputs are checked

        device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
        lpips = LPIPS(args.vgg16_weights, device)
    except (ValueError, VGGWeightsError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    if not lpips.standard:
        print(f"{prog}: warning: NON-STANDARD VGG16 weights ({lpips.path.name}, sha256 {lpips.sha256[:12]}): "
              "LPIPS values are not comparable to published ones", file=sys.stderr)
    g = g.to(device)
    options = ProjectOptions(steps=args.steps, space=space, mse_weight=args.mse_weight, seed=args.seed)
    for path, target, how in targets:
        print(f"{prog}: {path.name}: {how}", file=sys.stderr)
        result = project(g, target, lpips, options, progress=not args.no_progress, label=path.stem)
        info = {"target": str(path), "generator": str(args.generator), "steps": args.steps, **lpips.describe()}
        written = write_outputs(out, path.stem, target, result, info)
        print(json.dumps({"image": str(path), "lpips": round(result.lpips, 5), "mse": round(result.mse, 6),
                          "space": space, "steps": args.steps, "vgg16_standard_weights": lpips.standard, **written}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
