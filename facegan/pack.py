"""Pack images into webdataset tar shards plus a manifest, once, before training.

    python -m facegan.pack synthetic --num 10000 --out shards/synthetic-64
    python -m facegan.pack celeba /data/celeba --split train --out shards/celeba-64
    python -m facegan.pack folder /data/faces --out shards/faces-64
    python -m facegan.pack synthetic --num 10000 --attribute-share Eyeglasses=0.1 --out shards/glasses-10
    python -m facegan.pack inspect shards/celeba-64 [--verify] [--joint Male,Young]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from pathlib import Path

from facegan.data.attributes import available, parse_condition
from facegan.data.balance import label, plan
from facegan.data.imaging import FORMATS, sample_layout
from facegan.data.pack import CELEBA_CROP, SIZES, PackError, pack
from facegan.data.shardset import ShardSetError, load_shardset, shared_shards_warning
from facegan.data.sources.celeba import CelebAError, CelebASource
from facegan.data.sources.folder import FolderSource
from facegan.data.sources.synthetic import SyntheticSource
from facegan.version import __version__


def summary(manifest: dict, out: Path) -> str:
    """One line: what was packed, where, and what was left out and why."""
    crop = manifest["crop"] or "full"
    line = (f"packed {manifest['count']} images into {len(manifest['shards'])} shards at {out} "
            f"({manifest['size']} px, crop {crop}, {manifest['format']})")
    reasons = Counter(s["reason"].split(":")[0] for s in manifest["skipped"])
    if manifest["skipped"]:
        detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
        line += f"; skipped {len(manifest['skipped'])} ({detail})"
    ignored = manifest["ignored"]
    if ignored["count"]:
        line += f"; ignored {ignored['count']} files"
        if ignored.get("reasons"):  # manifests before the reasons were recorded have none
            line += f" ({', '.join(f'{n} {r}' for r, n in ignored['reasons'].items())})"
    return line


def _describe_sample(m: dict) -> str:
    layout = m.get("sample") or sample_layout(m["format"], m["size"])  # older manifests lack it
    return "sample: " + "; ".join(f".{ext} {what}" for ext, what in layout.items())


def attribute_lines(shardset, joint: tuple[str, ...] = ()) -> list[str]:
    """Each attribute's share of the samples (the manifest's counts), and with `joint` every
    combination of those attributes' counts (read from the samples' json)."""
    have = available(shardset)
    if not have:
        return ["attributes: none (the source records none)"]
    n = shardset.count
    lines = [f"attributes ({len(have)}, share of {n} samples):"]
    ranked = sorted(have.items(), key=lambda x: -x[1])
    for i in range(0, len(ranked), 4):
        lines.append("  " + "  ".join(f"{name:<20} {k / n:>6.1%}" for name, k in ranked[i:i + 4]))
    if joint:
        balance = plan(shardset, joint)
        lines.append(f"joint ({','.join(joint)}):")
        for cell, k in sorted(balance.counts.items()):
            lines.append(f"  {label(joint, cell):<40} {k:>7}  {k / n:>6.1%}")
        lines.append(f"  --balance {','.join(joint)}: the rarest cell's images would be shown "
                     f"{balance.rarest()[1]:.2f}x per epoch")
    return lines


def inspect(root: Path, verify: bool, joint: tuple[str, ...] = ()) -> str:
    """The manifest summary and attribute shares; with verify, re-hash every shard and decode
    every sample."""
    from facegan.data.stream import verify_samples  # here: torch, torchvision stay out of pack workers

    shardset = load_shardset(root)
    m = shardset.manifest
    src = m["source"]
    lines = [summary(m, root),
             f"source: {src.get('kind')} {src.get('root', '')} layout={src.get('layout', '-')} "
             f"split={m['split']}",
             _describe_sample(m),
             f"facegan {m['facegan_version']}, content sha256 {m['content_sha256'][:16]}"]
    for s in m["shards"]:
        lines.append(f"  {s['name']}  {s['count']:>6} samples  {s['bytes']:>11} bytes  {s['sha256'][:16]}")
    lines += attribute_lines(shardset, joint)
    if verify:
        n = verify_samples(shardset, progress=True)
        lines.append(f"verified: {len(shardset.shards)} shards match their sha256, {n} samples decode")
    return "\n".join(lines)


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _names(text: str) -> tuple[str, ...]:
    try:
        return parse_condition(text, "--joint")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _share(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        share = float(value)
    except ValueError:
        share = math.nan
    if not sep or not 0 <= share <= 1:
        raise argparse.ArgumentTypeError(f"expected NAME=P with P in [0, 1], got {text!r}")
    return name.strip(), share


def _common_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--out", type=Path, help="output folder (default: shards/<source>-<size>)")
    p.add_argument("--size", type=int, default=64, choices=SIZES, help="output resolution (px)")
    p.add_argument("--crop", default=None,
                   help=f"side of the centred square cropped before resizing, or 'full' for the "
                        f"largest square; default {CELEBA_CROP} for celeba, full otherwise")
    p.add_argument("--format", default="npy", choices=FORMATS,
                   help="npy: raw uint8, lossless, no decode (default, fastest to stream); "
                        "png: lossless, about 25%% smaller, 3x slower to stream; jpg: quality 95")
    p.add_argument("--shard-size", type=_at_least_one, default=1000, help="samples per tar shard")
    p.add_argument("--workers", type=_at_least_one, default=min(8, os.cpu_count() or 1),
                   help="parallel decode/encode processes")
    p.add_argument("--readers", type=_at_least_one, default=16,
                   help="readers you will train with (processes x loader workers, all nodes): warns when "
                        "there are fewer shards, as readers would then share shards")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--strict", action="store_true", help="fail on any skipped image")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(prog="python -m facegan.pack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s (facegan {__version__})")
    sub = parser.add_subparsers(dest="source", required=True)
    c = sub.add_parser("celeba", parents=[common], help="CelebA, official or Kaggle layout")
    c.add_argument("root", type=Path, help="folder holding img_align_celeba/ or its zip")
    c.add_argument("--split", default="train", choices=("train", "val", "test", "all"))
    f = sub.add_parser("folder", parents=[common], help="any tree of images")
    f.add_argument("root", type=Path)
    s = sub.add_parser("synthetic", parents=[common], help="built-in procedural faces")
    s.add_argument("--num", type=int, default=10000, help="number of faces")
    s.add_argument("--seed", type=int, default=0, help="which set of faces")
    s.add_argument("--attribute-share", metavar="NAME=P", type=_share,
                   help="exactly this share of the faces with attribute NAME (e.g. Eyeglasses=0.1): a "
                        "skewed set, for studies of --balance")
    i = sub.add_parser("inspect", help="print a shard set's manifest summary")
    i.add_argument("root", type=Path)
    i.add_argument("--verify", action="store_true", help="re-hash shards and decode every sample")
    i.add_argument("--joint", metavar="A,B", type=_names, default=(),
                   help="also count every combination of these attributes (what --balance would balance)")
    return parser


def parse_crop(value: str | None, source_kind: str) -> int | None:
    if value is None:
        return CELEBA_CROP if source_kind == "celeba" else None
    if value == "full":
        return None
    if not value.isdigit() or int(value) < 8:
        raise PackError(f"--crop {value!r}: expected a side in pixels (e.g. 140) or 'full'")
    return int(value)


def make_source(args):
    if args.source == "celeba":
        return CelebASource(args.root, args.split)
    if args.source == "folder":
        return FolderSource(args.root)
    if args.num < 1:
        raise PackError(f"--num {args.num}: expected at least 1")
    return SyntheticSource(args.num, args.seed, args.size, args.attribute_share)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.source == "inspect":
            print(inspect(args.root, args.verify, args.joint))
            return 0
        source = make_source(args)
        crop = parse_crop(args.crop, source.kind)
        out = args.out or Path("shards") / f"{source.kind}-{args.size}"
        if source.kind == "celeba":
            print(f"found CelebA in the {source.layout} layout at {args.root}", file=sys.stderr)
        manifest = pack(source, out, size=args.size, crop=crop, fmt=args.format,
                        shard_size=args.shard_size, workers=args.workers,
                        overwrite=args.overwrite, strict=args.strict,
                        split=getattr(args, "split", "train"), progress=not args.no_progress)
    except (PackError, CelebAError, ShardSetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the output cannot be made or written: a bad --out, a full disk
        print(f"error: {e.filename}: {e.strerror or e}" if e.filename else f"error: {e}", file=sys.stderr)
        return 2
    print(summary(manifest, out))
    warning = shared_shards_warning(len(manifest["shards"]), args.readers, manifest["count"])
    if warning:
        print(f"{warning} (--readers)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
