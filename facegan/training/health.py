"""Is the run healthy? A watch over each step's losses, kept on the device (no host sync per
step) and read at the loop's sync points: logging, grids, measurements and checkpoints.

Two faults stop a run, each with one line and a non-zero exit, and neither leaves a grid or a
checkpoint of a step past the last healthy one:
- a non-finite loss (NaN or infinite), at once;
- divergence with finite losses (the divergence guard): loss/D or loss/G beyond the loss's
  plausible bound (GANLoss.plausible_loss) for `patience` consecutive steps. For the logistic
  losses that bound also means D's outputs are pinned at 0 or 1. A shorter excursion only holds
  back grids and checkpoints until a healthy step, with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

EVIDENCE = ("loss/D", "loss/G", "D(x)", "D(G(z))")


class NonFiniteLoss(FloatingPointError):
    pass


class Diverged(FloatingPointError):
    pass


@dataclass
class Reading:
    first_bad: int  # first step with a non-finite loss on any rank, or -1
    streak: int  # consecutive steps beyond the bound up to the latest, on the worst rank
    since: int  # first step of this rank's streak (-1 when this rank has none)
    evidence: dict[str, float]  # this rank's EVIDENCE values at `since`


class Health:
    def __init__(self, device: torch.device, bound: float = 0.0, patience: int = 100):
        """`bound` 0: the divergence guard is off (non-finite losses still stop the run)."""
        self.bound, self.patience = bound, patience
        self.first_bad = torch.full((), -1, device=device, dtype=torch.long)
        self.streak = torch.zeros((), device=device, dtype=torch.long)
        self.since = torch.full((), -1, device=device, dtype=torch.long)
        self.evidence = torch.zeros(len(EVIDENCE), device=device, dtype=torch.float64)

    def observe(self, step: int, logs: dict[str, torch.Tensor]) -> None:
        """After step `step`, from its (this rank's) logs; device ops only."""
        values = torch.stack([logs.get(k, torch.tensor(float("nan"))).to(self.evidence) for k in EVIDENCE])
        finite = torch.isfinite(values[:2]).all()
        self.first_bad = torch.where(~finite & (self.first_bad < 0), step, self.first_bad)
        if not self.bound:
            return
        beyond = finite & (values[:2].abs() > self.bound).any()
        starts = beyond & (self.streak == 0)
        self.streak = torch.where(beyond, self.streak + 1, 0)
        self.since = torch.where(starts, step, torch.where(beyond, self.since, -1))
        self.evidence = torch.where(starts, values, self.evidence)

    def read(self, reduce_max: Callable[[torch.Tensor], torch.Tensor]) -> Reading:
        """Every rank (one all-reduce of two numbers, one host read)."""
        first_bad, streak = reduce_max(torch.stack([self.first_bad, self.streak])).tolist()
        evidence = dict(zip(EVIDENCE, self.evidence.tolist()))
        return Reading(int(first_bad), int(streak), int(self.since), evidence)

    def describe(self, reading: Reading, loss: str) -> str:
        """The evidence of a streak, for the warning and the error."""
        if reading.since < 0:
            return f"on another rank (|loss/D| or |loss/G| beyond {self.bound:g})"
        values = ", ".join(f"{k} {v:.3g}" for k, v in reading.evidence.items())
        return (f"since step {reading.since}: {values} (a healthy {loss} run keeps |loss/D| and |loss/G| "
                f"within {self.bound:g})")
