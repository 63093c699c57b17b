"""Progress bars for long work (packing, verifying, features, sampling, the attribute classifier):
redrawn 5 times a second on a terminal, one line per 10 s in a log file."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int | None, desc: str, unit: str = "img", enabled: bool = True, **kwargs) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled,
                mininterval=0.2 if sys.stderr.isatty() else 10, **kwargs)
