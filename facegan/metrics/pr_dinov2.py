"""Precision and recall (Kynkaanniemi et al. 2019, k = 3) in DINOv2 space, as Stein et al. 2023
report them beside FD-DINOv2: the same maths as prc.py on the DINOv2 features."""

from __future__ import annotations

from facegan.metrics import prc
from facegan.metrics.features import Features, Needs

NEEDS = Needs(rows=frozenset({"dinov2"}))
REAL_NEEDS = Needs(rows=frozenset({"dinov2"}))


def compute(fake: Features, real: Features) -> dict[str, float]:
    out = prc.precision_recall(fake.rows["dinov2"], real.rows["dinov2"])
    return {f"{k}_dinov2": v for k, v in out.items()}
