"""The run's clock: `--max-minutes`, and with `--lr-decay-minutes` the lr anneal planned against it.

A schedule that decays over kimg needs the run's length in images, which a run budgeted by time
does not know in advance. With `--lr-decay-minutes M` and `--max-minutes T`, the run trains at its
base lr until T - M minutes of training are spent, then plans the anneal once: from the throughput
it measured, the images that the time left will take, `end_nimg`. From then on the lr is a pure
function of the images seen (decaying from the plan's start to `end_nimg`), the plan is kept in the
run's state, and the run ends at `end_nimg` by images, not by the clock, so a resume after the plan
follows the same curve to the same end, bitwise. The time spent is kept in every checkpoint
(`train_seconds`), so with `--lr-decay-minutes` the budget counts the run's training time over all
its starts: a run preempted before the plan resumes with what is left of it.

Without `--lr-decay-minutes`, `--max-minutes` is the budget of each start, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from facegan.training.state import RunState


class TimeBudget:
    def __init__(self, max_minutes: float, lr_decay_minutes: float, state: RunState,
                 now: Callable[[], float] = time.monotonic):
        """--max-minutes and --lr-decay-minutes (0: off); `now`: the clock in seconds
        (time.monotonic; the loop's Hooks may give another)."""
        self.minutes, self.decay_minutes, self.now = max_minutes, lr_decay_minutes, now
        self.started, self.start_nimg = now(), state.nimg
        self.spent_before = state.train_seconds  # training time of the run's earlier starts

    def spent(self) -> float:
        """Seconds of training: the run's over all starts."""
        return self.spent_before + self.now() - self.started

    def budget_spent(self) -> float:
        """Seconds counted against --max-minutes: the run's with --lr-decay-minutes, else this start's."""
        return self.spent() if self.decay_minutes else self.now() - self.started

    def out_of_time(self, state: RunState) -> bool:
        """Past --max-minutes; never once the anneal is planned (it ends the run by images)."""
        return bool(self.minutes) and state.anneal is None and self.budget_spent() >= self.minutes * 60

    def plan_due(self, state: RunState) -> bool:
        return bool(self.decay_minutes) and state.anneal is None and \
            self.budget_spent() >= (self.minutes - self.decay_minutes) * 60

    def planned_end(self, state: RunState) -> int:
        """Where the anneal should end, in images: the time left at this start's throughput."""
        elapsed = self.now() - self.started
        rate = (state.nimg - self.start_nimg) / elapsed if elapsed > 0 else 0.0
        left = max(self.minutes * 60 - self.spent(), 0.0)
        return state.nimg + round(rate * left)
