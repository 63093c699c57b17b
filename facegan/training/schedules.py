"""Learning-rate schedules as a pure function of images seen.

The loop sets `param_group["lr"] = base_lr * lr_factor(...)` every step from its image counter, so
a resumed run, or one on another world size, follows the same curve.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "cosine")


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
