"""What the bench write-ups share: a markdown page whose text after "## Observations" (a person's
reading of the grids) survives a rerun that rewrites the figures above it."""

from __future__ import annotations

from pathlib import Path

OBSERVATIONS = "## Observations"


def write_keeping_observations(path: Path, lines: list[str]) -> None:
    kept = ""
    if path.exists() and OBSERVATIONS in path.read_text():
        kept = path.read_text().split(OBSERVATIONS, 1)[1]
    path.write_text("\n".join(lines) + "\n\n" + OBSERVATIONS + (kept or "\n\n(what the grids show)\n"))
