"""FID of a generator, an image folder or a shard set against packed shards; one JSON line out.

    python -m facegan.evaluate --generator RUN/generator.safetensors --data SHARDS --num-samples 50000
    python -m facegan.evaluate --images DIR --data SHARDS
    python -m facegan.evaluate --data SHARDS_A --data SHARDS_B

Runs on one process or under `accelerate launch` / `torchrun`, each rank scoring its share.
Real-data statistics are cached (see --cache-dir). The JSON names the Inception weights used.
"""

from __future__ import annotations

import argparse
import json
import sys

from .config import OneLineErrors
from .inception import Inception, InceptionWeightsError
from .shardset import ShardSetError, load_shardset


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where it tells something: not for None or a flag's False, and
    not where the help already says what the default is (it was printed twice there)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrors(prog="python -m facegan.evaluate", description=__doc__.split("\n")[0],
                      formatter_class=DefaultsHelp, allow_abbrev=False)
    p.add_argument("--data", action="append", required=True, metavar="SHARDS",
                   help="packed shard set (the reference); give it twice to score one set against another")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--generator", metavar="FILE", help="exported generator (.safetensors)")
    what.add_argument("--images", metavar="DIR", help="a folder of images (recursive)")
    p.add_argument("--num-samples", type=int, default=50000, help="images to generate with --generator")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated latents")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="torch-fidelity InceptionV3 weights file (default: torch-fidelity's standard "
                        "weights, downloaded once)")
    p.add_argument("--batch-size", type=int, default=100, help="images per Inception batch per process")
    p.add_argument("--num-workers", type=int, default=2, help="shard reading workers per process")
    p.add_argument("--cache-dir", default=None,
                   help="where real-data statistics are cached (default: $FACEGAN_CACHE/fid-stats or "
                        "~/.cache/facegan/fid-stats)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached statistics")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    return p


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
    from accelerate import Accelerator

    from . import metrics
    from .checkpoint import load_generator
    from .runtime import use_cpu

    acc = Accelerator(cpu=use_cpu(args.cpu))
    rank, world = acc.process_index, acc.num_processes
    common = {"batch_size": args.batch_size, "rank": rank, "world_size": world,
              "reduce": lambda t: acc.reduce(t, "sum"), "progress": acc.is_main_process}
    cache_dir = "" if args.no_cache else args.cache_dir
    try:
        inception = Inception(args.inception_weights, acc.device)
        real = load_shardset(args.data[0])
        if args.generator:
            g, _ = load_generator(args.generator)
            if g.resolution != real.size:
                raise ValueError(f"{args.generator} makes {g.resolution} px images, "
                                 f"{args.data[0]} holds {real.size} px")
            record = metrics.score_generator(inception, g.to(acc.device), g.z_dim, real,
                                             args.num_samples, seed=args.seed, num_workers=args.num_workers,
                                             cache_dir=cache_dir, **common)
            record = {"generator": args.generator, "data": args.data[0], **record}
        else:
            ref, hit = metrics.shard_stats(inception, real, num_workers=args.num_workers, cache_dir=cache_dir,
                                           **common)
            if args.images:
                other = metrics.folder_stats(inception, args.images, **common)
                inputs = {"images": args.images, "data": args.data[0]}
            else:
                other, other_hit = metrics.shard_stats(inception, load_shardset(args.data[1]),
                                                       num_workers=args.num_workers, cache_dir=cache_dir,
                                                       **common)
                inputs = {"data": args.data[0], "data2": args.data[1], "data2_stats_cached": other_hit}
            record = {**inputs, **metrics.fid_record(metrics.frechet_distance(ref, other), inception,
                                                     num_real=ref.count, num_other=other.count,
                                                     real_stats_cached=hit)}
    except (InceptionWeightsError, ShardSetError, ValueError, FileNotFoundError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    if acc.is_main_process:
        if "warning" in record:
            print(f"{prog}: warning: {record['warning']}", file=sys.stderr)
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
