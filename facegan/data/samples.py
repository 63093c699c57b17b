"""The sample streams: which samples each reader takes, in which order, and where a resumed
stream starts. A reader is one (rank, loader worker) pair: TrainStream is endless and shuffled, a
pure function of (seed, segment, rank, worker, world, workers); EvalStream is exactly one pass in
manifest order. Both batch and collate; loader.py moves their batches to the training process."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from facegan.data import attributes as conditioning
from facegan.data import balance as balancing
from facegan.data.decode import decode
from facegan.data.shardset import Shard, ShardSet, ShardSetError, iter_shard
from facegan.distribution import ONE, Dist


@dataclass(frozen=True)
class StreamSpec:
    """What a stream yields, apart from who reads it (a Dist) and how (the loader's workers)."""

    batch_size: int
    with_meta: bool = False  # each batch's "meta": the samples' json
    attributes: tuple[str, ...] | None = None  # each batch's "attrs" [B,K] 0/1 of these attributes
    group: int = 1  # batches per loader message (ShardLoader splits them again)


@dataclass(frozen=True)
class TrainSpec(StreamSpec):
    """The training stream's own settings: it is a pure function of these, the Dist and the workers."""

    seed: int = 0
    segment: int = 0  # a new one at every checkpoint boundary (the loop's cadence)
    skip: int = 0  # batches of the segment this rank took already (a resume)
    hflip: bool = True
    shuffle_buffer: int = 2000
    balance: balancing.Balance | None = None  # balance.plan's cells: each sample shown its cell's weight times


def _stack(images: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """[B,H,W,3] from [H,W,3] images; inside a DataLoader worker, straight into shared memory
    (as torch's default_collate does), which saves a copy when the batch goes to the main process."""
    out = None
    if get_worker_info() is not None:
        numel = len(images) * images[0].numel()
        # A private API, as torch's own default_collate uses it: the one way to allocate the batch
        # in shared memory, which the worker then hands over without a copy.
        storage = images[0].untyped_storage()._new_shared(numel, device="cpu")
        out = images[0].new(storage).resize_(len(images), *images[0].shape)
    return torch.stack(images, out=out)


def collate(samples: list[tuple], with_meta: bool) -> dict:
    """Samples (image, key, json, attributes or None[, index]) -> a batch; "attrs" ([B,K] float
    0/1, the conditioned attributes) where the stream reads them, "index" (each sample's place in
    the manifest) where the stream gives one."""
    images, keys, metas, attrs, *index = zip(*samples)
    # Stacking [H,W,3] images and permuting gives [B,3,H,W] in channels_last memory order: one
    # contiguous copy, and the layout convolutions on GPU prefer (bench/RESULTS.md, its "data.py" section).
    batch = {"image": _stack(images).permute(0, 3, 1, 2), "key": list(keys)}
    if attrs[0] is not None:
        batch["attrs"] = torch.tensor(attrs, dtype=torch.float32)
    if index:
        batch["index"] = torch.tensor(index[0], dtype=torch.long)
    if with_meta:
        batch["meta"] = [json.loads(bytes(m)) if m is not None else {} for m in metas]
    return batch


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class _Failure:
    """A ShardSetError raised in a loader worker, sent to the main process as a value. Raised there,
    torch re-raises it with the worker's whole traceback inside the message (29 lines for one
    flipped byte); ShardLoader raises it again with the one line that names the shard."""

    def __init__(self, message: str):
        self.message = message


class _ShardStream(IterableDataset):
    """Batches of `spec` from this reader's samples of `shardset`; `dist` says which rank reads."""

    def __init__(self, shardset: ShardSet, spec: StreamSpec, dist: Dist = ONE):
        if spec.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {spec.batch_size}")
        self.shardset, self.spec, self.dist = shardset, spec, dist
        self.attributes = list(spec.attributes) if spec.attributes else None

    def _attrs(self, sample: dict) -> list[float] | None:
        """The conditioned attributes of a sample, from its json (None when not conditioning)."""
        if self.attributes is None:
            return None
        meta = json.loads(bytes(sample["json"])) if "json" in sample else None
        return conditioning.vector(meta, self.attributes, f"{sample.get('__url__')}: sample {sample['__key__']}")

    def _workers(self) -> tuple[int, int]:
        """(this loader worker's id, loader workers of this rank); (0, 1) without workers."""
        info = get_worker_info()
        return (info.id, info.num_workers) if info else (0, 1)

    def _slot(self, worker: int, workers: int) -> tuple[int, int]:
        """(this worker's global index, number of readers across all ranks)."""
        return self.dist.rank * workers + worker, self.dist.world_size * workers

    def _finish(self, samples, partial: bool):
        """`group` consecutive batches per item: one item is one message from a loader worker to
        the main process, which pays a fixed cost per message (a socket handshake for the shared
        memory, unpickling, the DataLoader's bookkeeping); ShardLoader splits it again."""
        size = self.spec.batch_size * self.spec.group
        # webdataset's own batching and shuffle functions are private (`_batched`, `_shuffle`): the
        # public pipeline stages wrap them in its DataPipeline, which our per-reader split, skip and
        # seeded RNGs would have to fight. These two are plain generators over samples.
        for batch in wds.filters._batched(samples, size, collation_fn=None, partial=partial):
            yield collate(batch, self.spec.with_meta)

    def __iter__(self):
        try:
            yield from self._batches()
        except ShardSetError as e:
            yield _Failure(str(e))

    def _batches(self):
        raise NotImplementedError


class TrainStream(_ShardStream):
    """Endless, shuffled; a pure function of (seed, segment, rank, worker, world, workers).

    `skip` resumes it mid-segment: the stream goes on as if this rank had already taken `skip`
    batches. A DataLoader takes messages from its workers in turn, starting at worker 0, so
    message m of the segment comes from worker m % W. A resumed iterator must take message
    skip // group first: its worker 0 plays the part of worker (skip // group) % W, and so on
    round. Each worker draws its shuffle and flips past the messages it already sent, reading
    their samples without decoding them; the loader drops the batches of a message taken in part
    (ShardLoader, skip % group)."""

    def __init__(self, shardset: ShardSet, spec: TrainSpec, dist: Dist = ONE):
        super().__init__(shardset, spec, dist)
        if spec.skip < 0:
            raise ValueError(f"skip must not be negative, got {spec.skip}")

    def _role(self) -> tuple[int, int, int]:
        """(the worker this one stands for, workers, samples that worker already sent)."""
        worker, workers = self._workers()
        spec = self.spec
        taken = spec.skip // spec.group  # messages taken whole
        role = (worker + taken) % workers
        sent = taken // workers + (role < taken % workers)
        return role, workers, sent * spec.group * spec.batch_size

    def _shards(self, reader: int, readers: int) -> Iterator[Shard]:
        """Each epoch, one permutation shared by all readers; each takes its own slice of it."""
        shards = self.shardset.shards
        for epoch in range(2**62):
            perm = np.random.default_rng(_seed(self.spec.seed, self.spec.segment, epoch)).permutation(len(shards))
            mine = perm[reader::readers] if len(shards) >= readers else perm[[reader % len(shards)]]
            for i in mine:
                yield shards[i]

    def _batches(self):
        spec, rank = self.spec, self.dist.rank
        worker, workers, sent = self._role()
        reader, readers = self._slot(worker, workers)
        rng = random.Random(_seed(spec.seed, spec.segment, rank, worker, 1))
        samples = (s for shard in self._shards(reader, readers) for s in iter_shard(shard))
        if spec.balance is not None:  # its own RNG: an unbalanced stream draws what it always drew
            samples = balancing.repeat(samples, spec.balance.names, spec.balance.weights(),
                                       random.Random(_seed(spec.seed, spec.segment, rank, worker, 2)))
        buffer = spec.shuffle_buffer
        samples = wds.filters._shuffle(samples, bufsize=buffer, initial=buffer // 2, rng=rng)
        for _ in itertools.islice(samples, sent):  # the same draws as prepare() below, no decoding
            if spec.hflip:
                rng.random()

        def prepare(sample):
            image = decode(sample)
            if spec.hflip and rng.random() < 0.5:
                image = image.flip(1)  # [H,W,3]: mirror the width
            return image, sample["__key__"], sample.get("json"), self._attrs(sample)

        yield from self._finish(map(prepare, samples), partial=False)


class EvalStream(_ShardStream):
    """Exactly one pass: reader i of n takes samples [N*i/n, N*(i+1)/n) in manifest order. Each
    batch has "index", every sample's place in the manifest."""

    def _range(self, reader: int, readers: int) -> Iterator[tuple[int, dict]]:
        total = self.shardset.count
        start, end = total * reader // readers, total * (reader + 1) // readers
        offset = 0
        for shard in self.shardset.shards:
            lo, hi = max(start, offset), min(end, offset + shard.count)
            if lo < hi:
                for i, sample in enumerate(iter_shard(shard), start=offset):
                    if i >= hi:
                        break
                    if i >= lo:  # samples before lo are read past, never decoded
                        yield i, sample
            offset += shard.count

    def _batches(self):
        reader, readers = self._slot(*self._workers())
        samples = ((decode(s), s["__key__"], s.get("json"), self._attrs(s), i)
                   for i, s in self._range(reader, readers))
        yield from self._finish(samples, partial=True)
