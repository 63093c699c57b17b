"""What a resume mid-segment costs: the time to the first batch of a stream opened at `skip`
batches (what a resumed run does: it reads past the samples its segment already delivered,
without decoding them) against one opened at 0, and the skipped images per second against the
stream's own rate. A segment is at most facegan.training.loop.SEGMENT_IMAGES images per rank, so
its last row bounds the cost of any resume.

Run: python bench/resume_skip.py [--celeba ROOT] [--workers 2] [--batch 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from facegan.data.pack import pack
from facegan.data.samples import TrainSpec
from facegan.data.sources.celeba import CelebASource
from facegan.data.stream import train_loader
from facegan.training.loop import SEGMENT_IMAGES

DEFAULT_CELEBA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-sample"


def first_batch_seconds(shards: Path, batch: int, workers: int, skip: int) -> float:
    start = time.perf_counter()
    stream = iter(train_loader(shards, TrainSpec(batch, skip=skip, seed=1), num_workers=workers, uint8=True))
    next(stream)
    seconds = time.perf_counter() - start
    del stream  # shuts its workers down
    return seconds


def stream_rate(shards: Path, batch: int, workers: int, batches: int) -> float:
    stream = iter(train_loader(shards, TrainSpec(batch, seed=1), num_workers=workers))
    for _ in range(4):  # workers started, queues filled
        next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--celeba", type=Path, default=DEFAULT_CELEBA, help="CelebA root (official layout)")
    p.add_argument("--size", type=int, default=64, help="image size to pack at")
    p.add_argument("--batch", type=int, default=128, help="batch size per rank")
    p.add_argument("--workers", type=int, default=2, help="loader workers")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards"
        pack(CelebASource(args.celeba, split="all"), shards, size=args.size, shard_size=250, workers=2,
             split="all", progress=False)
        rate = stream_rate(shards, args.batch, args.workers, 40)
        base = first_batch_seconds(shards, args.batch, args.workers, 0)
        print(f"stream: {rate:,.0f} img/s decoded ({args.size} px npy, batch {args.batch}, {args.workers} workers); "
              f"first batch at skip 0: {base:.2f} s")
        print(f"{'skip (batches)':>15} {'images':>9} {'first batch':>12} {'extra':>8} {'skipped img/s':>14}")
        for skip in (50, 200, SEGMENT_IMAGES // args.batch):
            seconds = first_batch_seconds(shards, args.batch, args.workers, skip)
            extra = seconds - base
            print(f"{skip:>15} {skip * args.batch:>9,} {seconds:>11.2f}s {extra:>7.2f}s "
                  f"{skip * args.batch / max(extra, 1e-9):>14,.0f}")


if __name__ == "__main__":
    main()
