"""Stop requests: SIGTERM, SIGUSR1 (SLURM's preemption warning), Ctrl-C, or a file RUN/STOP.
The loop finishes its step, every rank agrees at the next check, it saves and exits."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

SIGNAL_CHECK_EVERY = 10  # steps between the all-rank checks for SIGTERM / SIGUSR1 / SIGINT / STOP


STOP_FILE = "STOP"  # `touch RUN_DIR/STOP`: save and exit at the next check, like SIGUSR1


class StopSignal:
    """Remembers SIGTERM / SIGUSR1 (SLURM preemption) and Ctrl-C (SIGINT), or finds RUN_DIR/STOP
    (what a launcher writes when signalling the right processes through its process tree is
    unreliable); the loop finishes its step, saves and exits. A second Ctrl-C aborts at once.
    Loader workers ignore these signals (facegan.data.loader.ignore_stop_signals): the save is ours."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self, run_dir: Path, announce: bool):
        self.received: int | None = None
        self.stop_file = run_dir / STOP_FILE
        self.announce = announce
        self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: abort without saving
        if self.announce and signum == signal.SIGINT:
            print(f"\nfacegan: Ctrl-C: saving within {SIGNAL_CHECK_EVERY} steps, then exiting; "
                  "Ctrl-C again aborts without saving", file=sys.stderr, flush=True)
        self.received = signum

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def agreed(self, acc: Accelerator, *clock: bool) -> tuple[bool, ...]:
        """(whether any rank got a signal or sees the stop file, then for each of the `clock` flags
        (past --max-minutes, the anneal's plan due) whether any rank raised it). One process needs
        no collective, and no host-device sync that would drain the GPU queue; several ranks
        all-reduce every flag at once."""
        local = (self.received is not None or self.stop_file.exists(), *clock)
        if acc.num_processes == 1:
            return local
        flags = acc.reduce(torch.tensor(local, dtype=torch.float32, device=acc.device), "max")
        return tuple(bool(f > 0) for f in flags)
