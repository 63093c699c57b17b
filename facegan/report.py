"""A run's report, with or without W&B: python -m facegan.report RUN

Writes RUN/report/index.html (report_page.py): the config, loss, D-output and regulariser
curves against kimg, every metric against kimg with its best marked, the sample grids on a
slider, the progress GIF, the final grid and the throughput, all from metrics.jsonl, config.json
and samples/. Beside it: losses.png (smoothed D and G losses, FID on a second axis when
measured), curves.png, metrics.png, throughput.png, progress.gif and grids/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facegan.cli import OneLineErrors
from facegan.metrics import registry
from facegan.watch.page import copy_grids, write_page
from facegan.watch.plots import plot_curves, plot_losses, plot_metrics, plot_throughput, progress_gif


def read_metrics(path: Path) -> list[dict]:
    """Every record of metrics.jsonl; a torn last line (a run killed mid-write) is left out."""
    records = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f"{path}:{number}: not a JSON line") from None
    return records


def metric_records(records: list[dict]) -> dict[str, list[tuple[float, int, float]]]:
    """Every metric value in metrics.jsonl: key -> [(kimg, step, value)], in registry order."""

    found: dict[str, list[tuple[float, int, float]]] = {}
    for r in records:
        for key in registry.value_keys(r):
            if "_std" not in key:  # a spread over subsets or splits, not a value to follow
                found.setdefault(key, []).append((r["kimg"], r["step"], r[key]))
    order = [base for entry in registry.METRICS.values() for base in entry.lower_is_better]
    return dict(sorted(found.items(), key=lambda kv: (order.index(registry.base_value(kv[0])), kv[0])))


def best_values(series: dict[str, list[tuple[float, int, float]]]) -> dict[str, dict]:

    lower = registry.directions(list(registry.METRICS))
    best = {}
    for key, points in series.items():
        down = lower[registry.base_value(key)]
        kimg, step, value = (min if down else max)(points, key=lambda p: p[2])
        best[key] = {"value": value, "step": step, "kimg": kimg, "better": "lower" if down else "higher"}
    return best


def write_report(run: str | Path, smoothing: float = 0.9, duration_ms: int = 300) -> dict:
    run = Path(run)
    metrics_file, samples = run / "metrics.jsonl", run / "samples"
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run folder")
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{metrics_file}: not found; is {run} a facegan run folder?")
    records = read_metrics(metrics_file)
    steps = [r for r in records if "loss/D" in r]
    if not steps:
        raise ValueError(f"{metrics_file}: no loss records yet")
    out = run / "report"
    out.mkdir(exist_ok=True)
    plot_losses(records, out / "losses.png", smoothing)
    plot_curves(records, out / "curves.png", smoothing)
    written = {"losses": str(out / "losses.png")}
    figures = {"curves": "curves.png"}
    series = metric_records(records)
    best = best_values(series)
    if series:
        plot_metrics(series, best, out / "metrics.png")
        figures["metrics"] = "metrics.png"
    median = plot_throughput(records, out / "throughput.png") if any("img/s" in r for r in records) else None
    if median is not None:
        figures["throughput"] = "throughput.png"
    grids = sorted(samples.glob("step-*.png")) if samples.is_dir() else []
    shown = []
    if grids:
        written["frames"] = progress_gif(grids, out / "progress.gif", duration_ms)
        written["progress"] = str(out / "progress.gif")
        kimg_at = {r["step"]: r["kimg"] for r in records if "kimg" in r}
        shown = copy_grids(grids, out, kimg_at)
    config_file = run / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    last = steps[-1]
    cards = [("steps", f"{last['step']:,}"), ("kimg", f"{last['kimg']:g}")]
    if median is not None:
        cards.append(("median img/s", f"{median:,.0f}"))
    cards += [(f"best {key} (step {b['step']})", f"{b['value']:.5g}") for key, b in list(best.items())[:4]]
    notes = []
    if any(k.endswith("_nonstandard") for k in series):
        notes.append("Values marked _nonstandard come from stand-in feature extractors (not the standard Inception "
                     "or VGG16 weights): compare them with each other only, never with published figures.")
    subtitle = " / ".join(str(config[k]) for k in ("preset", "arch", "loss") if k in config)
    written["page"] = str(write_page(out, title=f"facegan run: {run.resolve().name}", subtitle=subtitle,
                                     cards=cards, config=config, figures=figures, best=best, grids=shown,
                                     gif="progress.gif" if grids else None, notes=notes))
    return written


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrors(prog="python -m facegan.report", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                      description="Write a run folder's report: report/index.html with its figures and grids.")
    p.add_argument("run", help="a run folder (with metrics.jsonl and samples/)")
    p.add_argument("--smoothing", type=float, default=0.9, help="EMA weight for the loss curves, in [0, 1)")
    p.add_argument("--frame-ms", type=int, default=300, help="milliseconds per GIF frame")
    args = p.parse_args(argv)
    if not 0 <= args.smoothing < 1:
        p.error(f"--smoothing {args.smoothing}: must be in [0, 1)")
    try:
        written = write_report(args.run, args.smoothing, args.frame_ms)
    except (FileNotFoundError, ValueError) as e:
        print(f"facegan.report: error: {e}", file=sys.stderr)
        return 2
    print(f"facegan.report: {written['page']}" + (f" ({written['frames']} sample grids)"
                                                  if "progress" in written else " (no sample grids)"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
