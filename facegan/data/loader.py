"""The loader: a DataLoader over a sample stream whose workers ignore stop signals (the training
process decides what a stop means), hand over uint8 batches several to a message, and are shut
down where the iteration ends (and killed at exit if an iterator was never closed)."""

from __future__ import annotations

import atexit
import multiprocessing.util  # noqa: F401  (registers its exit hook now: ours, registered later, runs first)
import signal
import weakref

import torch
from torch.utils.data import DataLoader

from facegan.data.decode import to_float
from facegan.data.samples import _Failure, _ShardStream
from facegan.data.shardset import ShardSetError

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
    # Private APIs of torch's multi-process iterator, kept because there is no public way to end
    # an iterator's workers now (only garbage collection, which at exit may never come) or to
    # reach the worker processes to kill the ones left.
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
                         prefetch_factor=max(2, -(-PREFETCH_BATCHES // stream.spec.group)) if num_workers > 0 else None,
                         generator=torch.Generator().manual_seed(0), worker_init_fn=ignore_stop_signals)
        self.uint8 = uint8

    def __iter__(self):
        # Workers hand over uint8: 4x less to copy between processes than float (bench/RESULTS.md,
        # its "data.py" section); float conversion happens here, or on the GPU when uint8 is asked.
        spec = self.dataset.spec
        drop = getattr(spec, "skip", 0) % spec.group  # the batches of a message a resume took in part
        size = spec.batch_size
        batches = super().__iter__()
        _WORKERS.update(getattr(batches, "_workers", []))  # (private: see shut_down)
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
