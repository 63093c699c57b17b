"""Metrics of a generator, an image folder or a shard set against a reference; one JSON line out.

    python -m facegan.evaluate --generator RUN/generator.safetensors --data SHARDS --num-samples 50000
    python -m facegan.evaluate --images DIR --data SHARDS_OR_DIR --metrics fid,kid,pr
    python -m facegan.evaluate --data SHARDS_OR_DIR --data SHARDS_OR_DIR

The reference (the first --data) is a packed shard set or a folder of images; so is a second
--data. --metrics picks from fid, kid, is (generated side only), pr (precision and recall,
VGG16 features), fd_dinov2 and pr_dinov2 (DINOv2 features: Stein et al. 2023). Runs on one
process or under `accelerate launch` / `torchrun`, each rank extracting features for its share
once for all metrics. Features of real sets are cached (see --cache-dir). The JSON states the
protocol: the weights used and their sha256, the resize, the counts, the reference's content
hash and torch-fidelity's version.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from accelerate import Accelerator

from facegan.cli import DefaultsHelp, OneLineErrors
from facegan.data.balance import Shares
from facegan.data.shardset import ShardSet, ShardSetError, load_shardset
from facegan.distribution import Dist
from facegan.files import strict_json
from facegan.metrics import dinov2, features, registry, score
from facegan.metrics.dinov2 import DINOv2WeightsError
from facegan.metrics.inception import InceptionWeightsError
from facegan.metrics.vgg import VGGWeightsError
from facegan.networks.exports import load_generator
from facegan.runtime import use_cpu


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrors(prog="python -m facegan.evaluate", description=__doc__.split("\n")[0],
                      formatter_class=DefaultsHelp, allow_abbrev=False)
    p.add_argument("--data", action="append", required=True, metavar="SHARDS_OR_DIR",
                   help="the reference: a packed shard set or an image folder; give it twice to score one "
                        "set against another")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--generator", metavar="FILE", help="exported generator (.safetensors)")
    what.add_argument("--images", metavar="DIR", help="a folder of images (recursive)")
    p.add_argument("--metrics", default="fid", help="comma list of " + ", ".join(registry.METRICS) +
                   " (is: generated images only; pr: precision and recall)")
    p.add_argument("--num-samples", type=int, default=50000, help="images to generate with --generator")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated latents")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="torch-fidelity InceptionV3 weights file (default: torch-fidelity's standard "
                        "weights, downloaded once)")
    p.add_argument("--vgg16-weights", metavar="PATH",
                   help="torchvision VGG16 weights file for pr (default: torchvision's standard "
                        "IMAGENET1K_V1 weights, downloaded once)")
    p.add_argument("--dinov2-weights", metavar="PATH",
                   help="Meta's DINOv2 weights file for fd_dinov2 and pr_dinov2, e.g. dinov2_vitl14_pretrain.pth "
                        "(default: from torch hub's cache, downloaded once)")
    p.add_argument("--dinov2-model", default=dinov2.DEFAULT, choices=list(dinov2.MODELS),
                   help="the DINOv2 network of fd_dinov2 and pr_dinov2 (Stein et al. report ViT-L/14)")
    p.add_argument("--attr-classifier", metavar="FILE",
                   help="attribute classifier for --metrics attr (python -m facegan.attributes train)")
    p.add_argument("--batch-size", type=int, default=100, help="images per feature batch per process")
    p.add_argument("--num-workers", type=int, default=2, help="shard reading workers per process")
    p.add_argument("--cache-dir", default=None,
                   help="where features of real sets are cached (default: $FACEGAN_CACHE/fid-stats or "
                        "~/.cache/facegan/fid-stats)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached features")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    return p


def open_set(path: str, flag: str = "--data"):
    """A packed shard set (a folder with manifest.json) or the sorted image files of a folder."""
    if (Path(path) / "manifest.json").is_file():
        return load_shardset(path)
    return features.list_images(path, flag)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "facegan.evaluate"
    others = [bool(args.generator), bool(args.images), len(args.data) == 2]  # what --data is scored against
    if len(args.data) > 2 or sum(others) != 1:
        print(f"{prog}: error: give --generator, --images, or a second --data", file=sys.stderr)
        return 2
    if args.num_samples < 2 or args.batch_size < 1:
        print(f"{prog}: error: --num-samples must be at least 2 and --batch-size at least 1", file=sys.stderr)
        return 2
    try:
        names = registry.parse_metrics(args.metrics)
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    if "attr" in names and not args.generator:
        print(f"{prog}: error: --metrics attr scores a conditional --generator (what it was asked against what "
              "it made)", file=sys.stderr)
        return 2


    acc = Accelerator(cpu=use_cpu(args.cpu))
    common = {"batch_size": args.batch_size, "dist": Dist.of(acc), "progress": acc.is_main_process}
    cache_dir = "" if args.no_cache else args.cache_dir
    try:
        # The inputs first: a wrong path is one line before any weights are loaded (or downloaded).
        real = open_set(args.data[0])
        if args.images:
            features.list_images(args.images, "--images")
        if args.data[1:]:
            open_set(args.data[1])
        if args.generator:
            g, meta = load_generator(args.generator)
            size = real.size if isinstance(real, ShardSet) else None
            if size is not None and g.resolution != size:
                raise ValueError(f"{args.generator} makes {g.resolution} px images, {args.data[0]} holds {size} px")
        extractors = score.build_extractors(names, args.inception_weights, args.vgg16_weights, acc.device,
                                            args.attr_classifier, args.dinov2_weights, args.dinov2_model)
        if args.generator:
            record = score.score_generator(extractors, names, g.to(acc.device), real, args.num_samples,
                                             seed=args.seed, num_workers=args.num_workers, cache_dir=cache_dir,
                                             balance=balance_of(meta, args.generator), **common)
            record = {"generator": args.generator, "data": args.data[0], "metrics": names, **record}
        else:
            record = score_sets(extractors, names, real, args, cache_dir, common)
    except (InceptionWeightsError, VGGWeightsError, DINOv2WeightsError, ShardSetError, ValueError,
            FileNotFoundError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    if acc.is_main_process:
        if "warning" in record:
            print(f"{prog}: warning: {record['warning']}", file=sys.stderr)
        print(strict_json(record), flush=True)
    return 0


def balance_of(meta: dict, where: str) -> Shares | None:
    """The balanced stream an export's generator was trained on (its data.balance), or None."""
    saved = (meta.get("data") or {}).get("balance")
    return Shares.from_json(saved, where) if saved is not None else None


def score_sets(extractors, names: list[str], real, args, cache_dir, common: dict) -> dict:
    """The reference against --images or a second --data: both sets read (and cached) as real
    sets, the second standing where generated images stand."""
    fake_needs, real_needs = score.needs(names)
    cached = {}
    ref = None
    if real_needs is not None:
        ref, cached["real_stats_cached"] = features.real_features(extractors, real, real_needs, cache_dir=cache_dir,
                                                                 num_workers=args.num_workers, **common)
    if args.images:
        other, flag = features.list_images(args.images), "images"
        other_cache = ""  # a folder of samples changes from run to run: not worth caching
    else:
        other, flag = open_set(args.data[1]), "data2"
        other_cache = cache_dir
    other_features, hit = features.real_features(extractors, other, fake_needs, cache_dir=other_cache,
                                                 num_workers=args.num_workers, **common)
    if args.data[1:]:
        cached["data2_stats_cached"] = hit
    counts = {"num_real": ref.count} if ref is not None else {}
    record = score.make_record(names, extractors, score.compute(names, extractors, other_features, ref),
                               features.data_key(real) if ref is not None else None, **counts,
                               num_other=other_features.count, other=features.data_key(other))
    inputs = {flag: args.images or args.data[1], "data": args.data[0], "metrics": names}
    return {**inputs, **record, **cached}


if __name__ == "__main__":
    sys.exit(main())
