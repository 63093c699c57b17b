"""Stream packed shards: an endless shuffled stream for training, one exact pass for evaluation.

Each (rank, DataLoader worker) pair builds its own webdataset pipeline
(shards -> tar samples -> shuffle -> decode -> batch). Batches come out as
{"image": [B,3,H,W] float in [-1,1] (or uint8), "key": list[str], "meta": list[dict]?}, and in
the evaluation pass "index": [B] (each sample's place in the manifest).
"""

from __future__ import annotations

import ast
import atexit
import functools
import itertools
import json
import multiprocessing.util  # noqa: F401  (registers its exit hook now: ours, registered later, runs first)
import random
import signal
import struct
import warnings
import weakref
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from facegan.data import attributes as conditioning
from facegan.data import balance as balancing
from facegan.data.shardset import (
    Shard,
    ShardSet,
    ShardSetError,
    iter_shard,
    load_shardset,
    verify_checksums,
)
from facegan.progress import progress_bar

IMAGE_EXTS = ("npy", "png", "jpg")
# torchvision 0.29 deprecates its image codecs in favour of torchcodec, but they remain the
# fastest decoders of small PNGs here (about 90 us at 64 px, against 130 us through PIL).
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities",
                        category=DeprecationWarning)


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world size): the given values, else torch.distributed's, else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@functools.lru_cache(maxsize=16)
def _npy_shape(header: bytes) -> tuple[int, int, int] | None:
    """The [H,W,3] shape of a uint8 .npy header, or None for anything else (parsed once)."""
    try:
        d = ast.literal_eval(header.decode("latin1"))
        ok = d["descr"] == "|u1" and not d["fortran_order"] and len(d["shape"]) == 3
    except (ValueError, SyntaxError, KeyError, TypeError):
        return None
    return tuple(d["shape"]) if ok and d["shape"][2] == 3 else None


def decode_npy(data: memoryview) -> torch.Tensor | None:
    """[H,W,3] uint8 view of a raw .npy sample (version 1 header), or None if it is not one."""
    if data[:6] != b"\x93NUMPY" or data[6] != 1:
        return None
    end = 10 + int.from_bytes(data[8:10], "little")
    shape = _npy_shape(bytes(data[10:end]))
    if shape is None or len(data) - end != shape[0] * shape[1] * 3:
        return None
    return torch.frombuffer(data[end:], dtype=torch.uint8).view(shape)


def png_intact(data: memoryview) -> bool:
    """Whether every chunk's CRC matches. torchvision's libpng decoder crashes the process on a
    corrupt stream instead of raising, so PNG bytes are checked first (a few microseconds)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 8 + length
        if end + 4 > len(data) or zlib.crc32(data[pos + 4:end]) != struct.unpack_from(">I", data, end)[0]:
            return False
        if data[pos + 4:pos + 8] == b"IEND":
            return True
        pos = end + 4
    return False


def decode(sample: dict) -> torch.Tensor:
    """[H,W,3] uint8 from the sample's npy, png or jpg bytes."""
    where = f"{sample.get('__url__')}: sample {sample['__key__']}"
    for ext in IMAGE_EXTS:
        if ext == "npy" and ext in sample:
            image = decode_npy(sample[ext])
            if image is None:
                raise ShardSetError(f"{where}: not a uint8 [H,W,3] .npy array")
            return image
        if ext in sample:
            if ext == "png" and not png_intact(sample[ext]):
                raise ShardSetError(f"{where}: corrupt png (the shard changed since packing?)")
            # torchvision here, not at the top: its import loads torch._dynamo (~2 s per process
            # start), and the default npy shards never need it.
            from torchvision.io import ImageReadMode, decode_image

            data = torch.frombuffer(sample[ext], dtype=torch.uint8)
            try:
                return decode_image(data, mode=ImageReadMode.RGB).permute(1, 2, 0)
            except RuntimeError as e:
                raise ShardSetError(f"{where}: cannot decode {ext} ({e})") from None
    raise ShardSetError(f"{where}: has no npy, png or jpg image")


def _stack(images: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """[B,H,W,3] from [H,W,3] images; inside a DataLoader worker, straight into shared memory
    (as torch's default_collate does), which saves a copy when the batch goes to the main process."""
    out = None
    if get_worker_info() is not None:
        numel = len(images) * images[0].numel()
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


# 2/255 rounded down in float32: 255 maps just under 1.0, and the conversion is one fused kernel
# instead of three (bench/RESULTS.md, its "data.py" section).
_SCALE = float(np.nextafter(np.float32(2 / 255), np.float32(0)))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0,255] -> float32 [-1,1], on the images' device."""
    return torch.add(torch.tensor(-1.0), images, alpha=_SCALE)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class _Failure:
    """A ShardSetError raised in a loader worker, sent to the main process as a value. Raised there,
    torch re-raises it with the worker's whole traceback inside the message (29 lines for one
    flipped byte); ShardLoader raises it again with the one line that names the shard."""

    def __init__(self, message: str):
        self.message = message


class _ShardStream(IterableDataset):
    def __init__(self, shardset: ShardSet, batch_size: int, rank: int, world_size: int,
                 with_meta: bool, group: int = 1, attributes: list[str] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.shardset, self.batch_size = shardset, batch_size
        self.rank, self.world_size = rank, world_size
        self.with_meta, self.group, self.attributes = with_meta, group, attributes or None

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
        return self.rank * workers + worker, self.world_size * workers

    def _finish(self, samples, partial: bool):
        """`group` consecutive batches per item: one item is one message from a loader worker to
        the main process, which pays a fixed cost per message (a socket handshake for the shared
        memory, unpickling, the DataLoader's bookkeeping); ShardLoader splits it again."""
        size = self.batch_size * self.group
        for batch in wds.filters._batched(samples, size, collation_fn=None, partial=partial):
            yield collate(batch, self.with_meta)

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

    def __init__(self, shardset, batch_size, rank, world_size, with_meta=False, seed=0,
                 segment=0, hflip=True, shuffle_buffer=2000, group=1, attributes=None, skip=0, balance=None):
        super().__init__(shardset, batch_size, rank, world_size, with_meta, group, attributes)
        if skip < 0:
            raise ValueError(f"skip must not be negative, got {skip}")
        self.seed, self.segment, self.hflip, self.shuffle_buffer = seed, segment, hflip, shuffle_buffer
        self.skip = skip
        self.balance = balance  # (names, {cell: weight}) of facegan.data.balance, or None

    def _role(self) -> tuple[int, int, int]:
        """(the worker this one stands for, workers, samples that worker already sent)."""
        worker, workers = self._workers()
        taken = self.skip // self.group  # messages taken whole
        role = (worker + taken) % workers
        sent = taken // workers + (role < taken % workers)
        return role, workers, sent * self.group * self.batch_size

    def _shards(self, reader: int, readers: int) -> Iterator[Shard]:
        """Each epoch, one permutation shared by all readers; each takes its own slice of it."""
        shards = self.shardset.shards
        for epoch in range(2**62):
            perm = np.random.default_rng(_seed(self.seed, self.segment, epoch)).permutation(len(shards))
            mine = perm[reader::readers] if len(shards) >= readers else perm[[reader % len(shards)]]
            for i in mine:
                yield shards[i]

    def _batches(self):
        worker, workers, sent = self._role()
        reader, readers = self._slot(worker, workers)
        rng = random.Random(_seed(self.seed, self.segment, self.rank, worker, 1))
        samples = (s for shard in self._shards(reader, readers) for s in iter_shard(shard))
        if self.balance is not None:  # its own RNG: an unbalanced stream draws what it always drew
            names, weights = self.balance
            samples = balancing.repeat(samples, names, weights,
                                       random.Random(_seed(self.seed, self.segment, self.rank, worker, 2)))
        buffer = self.shuffle_buffer
        samples = wds.filters._shuffle(samples, bufsize=buffer, initial=buffer // 2, rng=rng)
        for _ in itertools.islice(samples, sent):  # the same draws as prepare() below, no decoding
            if self.hflip:
                rng.random()

        def prepare(sample):
            image = decode(sample)
            if self.hflip and rng.random() < 0.5:
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
        samples = ((decode(s), s["__key__"], s.get("json"), self._attrs(s), i) for i, s in self._range(reader, readers))
        yield from self._finish(samples, partial=True)


PREFETCH_BATCHES = 4  # batches each loader worker keeps ready (at least 2 messages)
# Training batches per worker-to-main message: receiving a message costs the main process the
# same whatever its size, so 4 to a message cut that cost per batch about 4x (bench/RESULTS.md,
# "Batches per loader message"). With 1 worker the stream is the same batch for batch; with
# several, each worker's batches come 4 at a time instead of 1.
BATCHES_PER_MESSAGE = 4


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def ignore_stop_signals(worker_id: int) -> None:
    """worker_init_fn: SLURM's scancel, Kubernetes, torchrun and a terminal's Ctrl-C signal the
    whole process group. A worker killed by that signal would crash the main process ("DataLoader
    worker ... killed by signal") before it could save; the process that owns the loader decides
    what a stop signal means, and its workers end when it shuts them down or dies."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


# Our loader workers, to end at exit those whose iterator was never closed.
_WORKERS: weakref.WeakSet = weakref.WeakSet()


def shut_down(batches) -> None:
    """Stop a DataLoader iterator's workers now. torch's own shutdown (at garbage collection)
    ends them with a done event, waits 5 s, then sends SIGTERM, which our workers ignore; and a
    collection at interpreter exit skips it altogether. Either left workers that
    multiprocessing's exit hook then joined for ever (a finished test run that never exited).
    So shut down where the iteration ends, and SIGKILL whatever is still alive after it."""
    batches._shutdown_workers()
    for worker in getattr(batches, "_workers", []):
        if worker.is_alive():
            worker.kill()
            worker.join()


@atexit.register
def _kill_leftover_workers() -> None:
    """Last resort for an iterator never closed (a script's global): its workers would ignore
    the SIGTERM of multiprocessing's exit hook, which then waits on them for ever."""
    for process in list(_WORKERS):
        if process.is_alive():
            process.kill()
            process.join()


class ShardLoader(DataLoader):
    """A DataLoader over a shard stream; the stream batches, converts and splits the work."""

    def __init__(self, stream: _ShardStream, num_workers: int, uint8: bool, pin_memory=False):
        # Its own generator: creating an iterator must not draw from the global torch RNG, which
        # the training loop's exact resume depends on (the streams are seeded explicitly).
        super().__init__(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                         prefetch_factor=max(2, -(-PREFETCH_BATCHES // stream.group)) if num_workers > 0 else None,
                         generator=torch.Generator().manual_seed(0), worker_init_fn=ignore_stop_signals)
        self.uint8 = uint8

    def __iter__(self):
        # Workers hand over uint8: 4x less to copy between processes than float (bench/RESULTS.md,
        # its "data.py" section); float conversion happens here, or on the GPU when uint8 is asked.
        size = self.dataset.batch_size
        drop = getattr(self.dataset, "skip", 0) % self.dataset.group  # of a message taken in part
        batches = super().__iter__()
        _WORKERS.update(getattr(batches, "_workers", []))
        try:
            for group in batches:
                if isinstance(group, _Failure):
                    raise ShardSetError(group.message)
                first, drop = drop * size, 0
                for start in range(first, len(group["key"]), size):
                    batch = {name: value[start:start + size] for name, value in group.items()}
                    if not self.uint8:
                        batch["image"] = to_float(batch["image"])
                    yield batch
        finally:  # exhausted, raised, or closed by its owner
            if self.num_workers > 0:
                shut_down(batches)


def _open(data, expect_size) -> ShardSet:
    return data if isinstance(data, ShardSet) else load_shardset(data, expect_size)


def train_loader(data: str | Path | ShardSet, batch_size: int, *, seed: int = 0, segment: int = 0,
                 skip: int = 0, hflip: bool = True, num_workers: int = 2, rank: int | None = None,
                 world_size: int | None = None, shuffle_buffer: int = 2000,
                 with_meta: bool = False, uint8: bool = False, expect_size: int | None = None,
                 pin_memory: bool = False, batches_per_message: int | None = None,
                 attributes: list[str] | None = None, balance: balancing.Balance | None = None) -> ShardLoader:
    """Endless shuffled batches of `batch_size` per rank, a pure function of (seed, `segment`, rank,
    world size, workers); `skip` starts it after that many batches of its segment (what a
    resumed run took already; the training loop starts a new segment at a fixed cadence).
    Loader workers send `batches_per_message` batches at a time (default BATCHES_PER_MESSAGE).
    With `attributes`, batches have "attrs" too: those attributes of each image, [B,K] 0/1.
    With `balance` (facegan.data.balance.plan), each sample is shown its cell's weight times on
    average."""
    per_message = BATCHES_PER_MESSAGE if batches_per_message is None else batches_per_message
    if per_message < 1:
        raise ValueError(f"batches_per_message must be at least 1, got {per_message}")
    rank, world_size = dist_info(rank, world_size)
    stream = TrainStream(_open(data, expect_size), batch_size, rank, world_size, with_meta, seed,
                         segment, hflip, shuffle_buffer,
                         group=per_message if num_workers > 0 else 1,  # no workers: no messages
                         attributes=attributes, skip=skip,
                         balance=(balance.names, balance.weights()) if balance is not None else None)
    return ShardLoader(stream, num_workers, uint8, pin_memory)


def eval_loader(data: str | Path | ShardSet, batch_size: int, *, num_workers: int = 2,
                rank: int | None = None, world_size: int | None = None, with_meta: bool = False,
                uint8: bool = False, expect_size: int | None = None,
                attributes: list[str] | None = None) -> ShardLoader:
    """One pass over every sample, split across ranks and workers: none missed, none repeated."""
    rank, world_size = dist_info(rank, world_size)
    stream = EvalStream(_open(data, expect_size), batch_size, rank, world_size, with_meta, attributes=attributes)
    return ShardLoader(stream, num_workers, uint8)


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
