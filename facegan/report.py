"""A run's report, with or without W&B: python -m facegan.report RUN

Writes RUN/report/index.html with its figures and grids (facegan/watch/run_report.py). Training
writes it too, at every evaluation and at its end.
"""

from __future__ import annotations

import argparse
import sys

from facegan.cli import OneLineErrors
from facegan.watch.run_report import write_report


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrors(prog="python -m facegan.report", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                      description="Write a run folder's report: report/index.html with its figures and grids.")
    p.add_argument("run", help="a run folder (with metrics.jsonl and samples/)")
    p.add_argument("--smoothing", type=float, default=0.9, help="EMA weight for the loss curves, in [0, 1)")
    p.add_argument("--frame-ms", type=int, default=300, help="milliseconds per GIF frame")
    args = p.parse_args(argv)
    if not 0 <= args.smoothing < 1:
        p.error(f"--smoothing {args.smoothing}: must be in [0, 1)")
    if not 10 <= args.frame_ms <= 60_000:
        p.error(f"--frame-ms {args.frame_ms}: must be in [10, 60000] (milliseconds per GIF frame)")
    try:
        written = write_report(args.run, args.smoothing, args.frame_ms)
    except (FileNotFoundError, ValueError) as e:
        print(f"facegan.report: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk or a file made read-only while the report is written
        print(f"facegan.report: error: {e.filename or args.run}: cannot write ({e.strerror or e})", file=sys.stderr)
        return 1
    print(f"facegan.report: {written['page']}" + (f" ({written['frames']} sample grids)"
                                                  if "progress" in written else " (no sample grids)"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
