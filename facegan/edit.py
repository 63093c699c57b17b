"""Edit faces along attribute directions in a generator's latent space.

    python -m facegan.edit fit --generator G --data SHARDS --attributes Smiling,Eyeglasses,Male --out dirs.safetensors
        [--classifier attributes.safetensors] [--condition-on Male] [--samples 5000]
    python -m facegan.edit apply --generator G --directions dirs.safetensors --edit Smiling=+2,Eyeglasses=-1 \
        --out grid.png
    python -m facegan.edit apply --generator G --directions dirs.safetensors --sweep Smiling --out sweep.png [--range 3]
    python -m facegan.edit apply ... --latent DIR/face-latent.safetensors   # a face from facegan.project

fit labels --samples generated faces with facegan's attribute classifier (trained on --data's
labels, or reused with --classifier) and fits a linear boundary per attribute in W (a style
generator) or z (the others): toolbox/directions.py. It prints each boundary's held-out accuracy;
a direction whose boundary is barely better than always guessing the commoner verdict moves faces
along something the classifier cannot see, and is flagged. --condition-on projects the named
attributes' directions out of the others (InterFaceGAN's conditional manipulation).

apply moves faces (--num seeded ones, or projected latents) by STRENGTH standard deviations of
the sampled latents along each direction: --edit writes a grid with each face (left) beside its
edit, --sweep one row per face from -RANGE to +RANGE.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from facegan.cli import OneLineErrors
from facegan.data.attributes import parse_condition
from facegan.files import probe_folder
from facegan.metrics.classifier import load_classifier, train_classifier, weak
from facegan.networks import sampling
from facegan.networks.exports import content_sha256, load_generator, write_network
from facegan.toolbox import directions as dirs
from facegan.toolbox.projection import read_latent, render_latent

FORMAT = "facegan_directions"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrors(prog="python -m facegan.edit", description=__doc__.split("\n")[0], allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="find attribute directions",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    f.add_argument("--generator", required=True, metavar="FILE")
    f.add_argument("--attributes", required=True, metavar="A,B,...", help="attributes to find directions for")
    f.add_argument("--out", required=True, metavar="FILE", help="the directions (.safetensors)")
    source = f.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="SHARDS", help="train the attribute classifier on these shards' labels")
    source.add_argument("--classifier", metavar="FILE", help="reuse a classifier (python -m facegan.attributes train)")
    f.add_argument("--condition-on", default="", metavar="A,B,...",
                   help="project these attributes' directions out of the others' (they are fitted too)")
    f.add_argument("--samples", type=int, default=5000, help="generated faces to label and fit on")
    f.add_argument("--epochs", type=int, default=5, help="classifier training passes (with --data)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--cpu", action="store_true")
    f.add_argument("--no-progress", action="store_true")
    a = sub.add_parser("apply", help="edit faces along directions",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    a.add_argument("--generator", required=True, metavar="FILE")
    a.add_argument("--directions", required=True, metavar="FILE", help="from facegan.edit fit")
    how = a.add_mutually_exclusive_group(required=True)
    how.add_argument("--edit", metavar="NAME=STRENGTH,...", help="e.g. Smiling=+2,Eyeglasses=-1 (in stds)")
    how.add_argument("--sweep", metavar="NAME", help="one row per face, columns from -RANGE to +RANGE")
    a.add_argument("--range", type=float, default=3.0, help="--sweep's largest strength")
    a.add_argument("--columns", type=int, default=7, help="--sweep's columns")
    a.add_argument("--latent", nargs="+", default=None, metavar="FILE",
                   help="faces from facegan.project (NAME-latent.safetensors) instead of seeded samples")
    a.add_argument("--num", type=int, default=8, help="seeded faces (without --latent)")
    a.add_argument("--seed", type=int, default=0)
    out = a.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="FILE", help="the grid (.png)")
    out.add_argument("--images-dir", metavar="DIR", help="each edited face as a PNG")
    a.add_argument("--cpu", action="store_true")
    a.add_argument("--force-directions", action="store_true",
                   help="apply directions fitted on another generator's weights (they move these faces along "
                        "something else: the grid is not an edit of the named attributes)")
    return p


def save_directions(path: Path, found: dict[str, dirs.Direction], info: dict) -> None:
    meta = {**info, "attributes": {n: {"scale": d.scale, "accuracy": d.accuracy, "majority_accuracy": d.majority,
                                       "share": d.share, "conditioned_on": list(d.conditioned_on)}
                                   for n, d in found.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({n: d.vector.contiguous() for n, d in found.items()}, str(path), metadata={FORMAT: json.dumps(meta)})


def load_directions(path: str | Path) -> tuple[dict[str, dirs.Direction], dict]:
    """The directions of a `fit` file and its metadata; one ValueError naming the file for a
    missing file, another format, or metadata and vectors that do not agree."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: directions file not found")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})[FORMAT])
        vectors = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors' own error types, a missing key, bad JSON
        raise ValueError(f"{path}: not a facegan directions file ({type(e).__name__})") from None
    problem = _directions_problem(meta, vectors)
    if problem:
        raise ValueError(f"{path}: not a readable facegan directions file ({problem}); fit it again with "
                         "python -m facegan.edit fit")
    found = {n: dirs.Direction(vectors[n].float(), float(a["scale"]), float(a["accuracy"]),
                               float(a["majority_accuracy"]), float(a["share"]), tuple(a["conditioned_on"]))
             for n, a in meta["attributes"].items()}
    return found, meta


def _directions_problem(meta, vectors: dict[str, torch.Tensor]) -> str | None:
    """What is wrong with a directions file's metadata and vectors, or None."""
    if not isinstance(meta, dict) or meta.get("space") not in ("w", "z"):
        return "no latent space 'w' or 'z' in its metadata"
    attrs = meta.get("attributes")
    if not isinstance(attrs, dict) or not attrs:
        return "no attributes in its metadata"
    sizes = set()
    for name, a in attrs.items():
        numbers = ("scale", "accuracy", "majority_accuracy", "share")
        if not (isinstance(a, dict) and all(isinstance(a.get(k), (int, float)) and not isinstance(a.get(k), bool)
                                            and math.isfinite(a[k]) for k in numbers)
                and isinstance(a.get("conditioned_on"), list)):
            return f"attribute {name!r} lacks a finite {', '.join(numbers)} or its conditioned_on list"
        v = vectors.get(name)
        if v is None or v.dim() != 1 or not v.is_floating_point() or not bool(torch.isfinite(v).all()):
            return f"attribute {name!r} has no finite 1-D vector"
        sizes.add(v.numel())
    return None if len(sizes) == 1 else f"vectors of different sizes {sorted(sizes)}"


def table(found: dict[str, dirs.Direction]) -> str:
    lines = [f"{'attribute':20s} {'shown in':>8s} {'held-out accuracy':>17s} {'(commoner)':>10s}  conditioned on"]
    for name, d in found.items():
        flag = "  WEAK: barely better than guessing" if d.accuracy < d.majority + 0.05 else ""
        lines.append(f"{name:20s} {d.share:8.1%} {d.accuracy:17.3f} {d.majority:10.3f}  "
                     f"{', '.join(d.conditioned_on) or '-'}{flag}")
    return "\n".join(lines)


def run_fit(args, prog: str) -> int:
    names = list(parse_condition(args.attributes, "--attributes"))
    on = list(parse_condition(args.condition_on, "--condition-on")) if args.condition_on else []
    if args.samples < 10:
        raise ValueError("--samples: at least 10")
    g, _ = load_generator(args.generator)
    weights = content_sha256(g)  # what apply checks: these directions belong to these weights
    probe_folder(Path(args.out).absolute().parent, "--out")
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    wanted = list(dict.fromkeys(names + on))
    if args.classifier:
        classifier, cmeta = load_classifier(args.classifier, device)
        what = args.classifier
    else:
        classifier, cmeta = train_classifier(args.data, wanted, epochs=args.epochs, seed=args.seed,
                                             progress=not args.no_progress)
        what = str(Path(args.out).with_name(Path(args.out).stem + "-classifier.safetensors"))
        Path(what).parent.mkdir(parents=True, exist_ok=True)
        write_network(classifier, Path(what), "attribute_classifier", cmeta)
        print(f"{prog}: attribute classifier trained on {args.data}, saved to {what}", file=sys.stderr)
        classifier = classifier.to(device)
    columns = dirs.check_classifier(g, classifier.attributes, classifier.resolution, wanted, what)
    reading_weakly = [n for n in weak(cmeta) if n in wanted]
    if reading_weakly:
        print(f"{prog}: warning: the classifier reads {', '.join(reading_weakly)} with under 85% held-out accuracy: "
              "their labels, and so their directions, are noisy", file=sys.stderr)
    g = g.to(device)
    latents, verdicts = dirs.label(g, classifier, columns, args.samples, args.seed, progress=not args.no_progress)
    found = dirs.fit(latents, verdicts, wanted, args.seed)
    for name in names:
        others = [c for c in on if c != name]
        if others:
            found[name] = dirs.condition(found, name, others)
    found = {n: found[n] for n in names}
    save_directions(Path(args.out), found, {"space": dirs.space_of(g), "generator": str(args.generator),
                                            "generator_sha256": weights, "classifier": what,
                                            "samples": args.samples, "seed": args.seed})
    print(table(found))
    print(json.dumps({"directions": args.out, "space": dirs.space_of(g),
                      **{f"accuracy/{n}": round(d.accuracy, 4) for n, d in found.items()}}))
    return 0


def parse_edit(text: str, known: dict) -> dict[str, float]:
    out = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            strength = float(value)
        except ValueError:
            raise ValueError(f"--edit {part!r}: expected NAME=STRENGTH, e.g. Smiling=+2") from None
        if not math.isfinite(strength):
            raise ValueError(f"--edit {part!r}: the strength must be a finite number of standard deviations")
        if not sep:
            raise ValueError(f"--edit {part!r}: expected NAME=STRENGTH, e.g. Smiling=+2")
        if name.strip() not in known:
            raise ValueError(f"--edit {name.strip()!r}: the directions file has {', '.join(known)}")
        out[name.strip()] = strength
    if not out:
        raise ValueError("--edit: nothing to edit")
    return out


def check_belongs(g: torch.nn.Module, meta: dict, found: dict, args, prog: str) -> None:
    """Directions fit the generator: the same latent space and size, and (where the file records
    it) the same weights. Directions fitted on another generator of the same shape would write a
    grid that looks like an edit and is not: refused unless --force-directions."""
    space, size = dirs.space_of(g), next(iter(found.values())).vector.numel()
    fitted_on = meta.get("generator", "another generator")
    if meta["space"] != space or size != (g.w_dim if space == "w" else g.z_dim):
        raise ValueError(f"{args.directions}: directions in {meta['space']} of size {size} (fitted for "
                         f"{fitted_on}), which {args.generator} does not have")
    theirs, ours = meta.get("generator_sha256"), content_sha256(g)
    if theirs is None:
        print(f"{prog}: warning: {args.directions} was fitted before facegan recorded its generator's weights; "
              f"nothing shows it belongs to {args.generator}", file=sys.stderr)
    elif theirs != ours and not args.force_directions:
        raise ValueError(f"{args.directions}: its directions belong to {fitted_on} (weights sha256 {theirs[:12]}), "
                         f"not to {args.generator} (sha256 {ours[:12]}); fit directions for this generator, or "
                         "--force-directions to apply them anyway")
    elif theirs != ours:
        print(f"{prog}: warning: --force-directions: {args.directions} belongs to {fitted_on}, not to "
              f"{args.generator}; the grid is not an edit of the named attributes", file=sys.stderr)


def run_apply(args, prog: str) -> int:
    if not (math.isfinite(args.range) and args.range > 0):
        raise ValueError(f"--range {args.range}: must be a positive finite number of standard deviations")
    if args.columns < 2 or args.num < 1:
        raise ValueError("--columns: at least 2; --num: at least 1")
    g, _ = load_generator(args.generator)
    found, meta = load_directions(args.directions)
    check_belongs(g, meta, found, args, prog)
    space = dirs.space_of(g)
    if args.sweep and args.sweep not in found:
        raise ValueError(f"--sweep {args.sweep!r}: the directions file has {', '.join(found)}")
    strengths = parse_edit(args.edit, found) if args.edit else None
    key = "w" if space == "w" else "z"
    faces = [read_latent(p, g, key) for p in args.latent] if args.latent else None
    probe_folder(Path(args.images_dir) if args.images_dir else Path(args.out).absolute().parent,
                 "--images-dir" if args.images_dir else "--out")
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    g = g.to(device)
    if faces is None:
        faces = [{key: x} for x in dirs.sample_latents(g, args.num, args.seed)]
    settings = ([{}, strengths] if strengths else
                [{args.sweep: float(a)} for a in torch.linspace(-args.range, args.range, args.columns)])
    images = []
    for face in faces:
        face = {k: v for k, v in face.items() if k != ("z" if key == "w" else "w")}  # the edited space's only
        for setting in settings:
            moved = dict(face)
            moved[key] = dirs.edit(face[key][None], found, setting)[0]
            images.append(sampling.to_uint8(render_latent(g, moved)).cpu())
    images = torch.cat(images)
    if args.images_dir:
        out = Path(args.images_dir)
        out.mkdir(parents=True, exist_ok=True)
        cells = images.view(len(faces), len(settings), *images.shape[1:])
        for i, row in enumerate(cells[:, 1:] if strengths else cells):  # an --edit's: the edited faces only
            for j, cell in enumerate(row):
                name = f"{i:04d}.png" if strengths else f"{i:04d}-{j:02d}.png"
                sampling.grid_image(cell[None], 1).save(out / name)
        print(f"{prog}: {len(faces)} faces edited in {out}", file=sys.stderr)
        return 0
    sampling.grid_image(images, nrow=len(settings)).save(args.out)
    what = (", ".join(f"{n} {s:+g}" for n, s in strengths.items()) if strengths else
            f"{args.sweep} from {-args.range:+g} to {args.range:+g} in {args.columns} columns")
    print(f"{prog}: {len(faces)} faces, {what}, in {args.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "facegan.edit"
    try:
        return run_fit(args, prog) if args.command == "fit" else run_apply(args, prog)
    except ValueError as e:  # ShardSetError included
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
