"""Learning-rate schedules as a pure function of images seen.

The loop sets `param_group["lr"] = base_lr * lr_factor(...)` every step from its image counter, so
a resumed run, or one on another world size, follows the same curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class Schedule:
    """One network's learning rate as a function of the images seen."""

    base: float  # the base learning rate
    kind: str = "constant"  # constant, linear or cosine
    warmup_kimg: float = 0.0  # linear warm-up from 0
    decay_kimg: float = 0.0  # linear/cosine: decay over the last this many kimg only (0: from the warm-up's end)
    final: float = 0.0  # linear/cosine: the multiplier of `base` they end at

    def lr(self, nimg: int | float, total_nimg: int | float) -> float:
        return self.base * lr_factor(self.kind, nimg, total_nimg, self.warmup_kimg * 1000, self.decay_kimg * 1000,
                                     self.final)


def lr_factor(kind: str, nimg: int | float, total_nimg: int | float, warmup_nimg: int | float,
              decay_nimg: int | float = 0, final: float = 0.0) -> float:
    """Multiplier of the base lr after `nimg` images.

    Warm-up: `min(1, max(nimg, 1) / warmup_nimg)`, linear in images seen and never exactly 0, so
    the very first step (nimg=0) already moves the weights a little. Then `constant` stays at 1;
    `linear` and `cosine` decay from 1 to `final` at `total_nimg`, with t = (nimg - start) /
    (total - start) clamped to [0, 1]. The decay starts at the end of warm-up, or, where
    `decay_nimg` > 0, that many images before the end (the lr stays at 1 until then: an anneal
    at the end of training). No warm-up when warmup_nimg <= 0.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"lr schedule {kind!r}: unknown; expected one of {', '.join(SCHEDULES)}")
    warm = min(1.0, max(nimg, 1) / warmup_nimg) if warmup_nimg > 0 else 1.0
    if kind == "constant":
        return float(warm)
    start = max(warmup_nimg, total_nimg - decay_nimg) if decay_nimg > 0 else warmup_nimg
    span = total_nimg - start
    t = min(1.0, max(0.0, (nimg - start) / span)) if span > 0 else float(nimg >= total_nimg)
    decay = 1.0 - t if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))
    return float(warm * (final + (1.0 - final) * decay))
