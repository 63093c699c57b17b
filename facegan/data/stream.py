"""Stream packed shards: an endless shuffled stream for training, one exact pass for evaluation.

Each (rank, DataLoader worker) pair reads its own part (samples.py: order, split, skip), decodes it
(decode.py) and batches it; the loader (loader.py) brings the batches to the process. Batches come
out as {"image": [B,3,H,W] float in [-1,1] (or uint8), "key": list[str], "meta": list[dict]?}, and
in the evaluation pass "index": [B] (each sample's place in the manifest).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from facegan.data.decode import decode
from facegan.data.loader import BATCHES_PER_MESSAGE, ShardLoader
from facegan.data.samples import EvalStream, StreamSpec, TrainSpec, TrainStream
from facegan.data.shardset import ShardSet, iter_shard, load_shardset, verify_checksums
from facegan.distribution import Dist
from facegan.progress import progress_bar


def default_dist() -> Dist:
    """Who reads when the caller does not say: torch.distributed's rank and world size, else one
    process. (Only the split: a stream never reduces.)"""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return Dist()


def _open(data, expect_size) -> ShardSet:
    return data if isinstance(data, ShardSet) else load_shardset(data, expect_size)


def train_loader(data: str | Path | ShardSet, spec: TrainSpec, *, dist: Dist | None = None, num_workers: int = 2,
                 uint8: bool = False, pin_memory: bool = False, expect_size: int | None = None,
                 batches_per_message: int | None = None) -> ShardLoader:
    """Endless shuffled batches of `spec.batch_size` per rank, a pure function of the spec (seed,
    segment, ...), the Dist (default: torch.distributed's, else one process) and the workers;
    `spec.skip` starts it after that many batches of its segment (what a resumed run took already;
    the training loop starts a new segment at a fixed cadence). With `spec.attributes`, batches
    have "attrs" too, [B,K] 0/1; with `spec.balance` (facegan.data.balance.plan), each sample is
    shown its cell's weight times on average. Loader workers send `batches_per_message` batches
    at a time (default BATCHES_PER_MESSAGE)."""
    per_message = BATCHES_PER_MESSAGE if batches_per_message is None else batches_per_message
    if per_message < 1:
        raise ValueError(f"batches_per_message must be at least 1, got {per_message}")
    spec = dataclasses.replace(spec, group=per_message if num_workers > 0 else 1)  # no workers: no messages
    stream = TrainStream(_open(data, expect_size), spec, dist or default_dist())
    return ShardLoader(stream, num_workers, uint8, pin_memory)


def eval_loader(data: str | Path | ShardSet, batch_size: int, *, dist: Dist | None = None, num_workers: int = 2,
                with_meta: bool = False, uint8: bool = False, expect_size: int | None = None,
                attributes: list[str] | None = None) -> ShardLoader:
    """One pass over every sample, split across ranks and workers: none missed, none repeated."""
    spec = StreamSpec(batch_size, with_meta, tuple(attributes) if attributes else None)
    return ShardLoader(EvalStream(_open(data, expect_size), spec, dist or default_dist()), num_workers, uint8)


def verify_samples(shardset: ShardSet, progress: bool = False) -> int:
    """Re-hash every shard and decode every sample; return the number of samples."""
    verify_checksums(shardset)
    bar = progress_bar(shardset.count, "verifying", enabled=progress)
    n = 0
    for shard in shardset.shards:
        for sample in iter_shard(shard):
            decode(sample)
            n += 1
            bar.update()
    bar.close()
    return n
