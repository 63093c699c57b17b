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
import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from .config import OneLineErrors
from .report_page import copy_grids, write_page


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


def smooth(values: list[float], weight: float) -> list[float]:
    """Exponential moving average, debiased (as TensorBoard and W&B smooth)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i))
    return out


def plot_losses(records: list[dict], out: Path, smoothing: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if "loss/D" in r]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for key, color in (("loss/D", "tab:blue"), ("loss/G", "tab:orange")):
        kimg = [r["kimg"] for r in steps]
        ax.plot(kimg, [r[key] for r in steps], color=color, alpha=0.2, linewidth=0.8)
        ax.plot(kimg, smooth([r[key] for r in steps], smoothing), color=color, label=key)
    ax.set_xlabel("kimg (thousands of real images shown)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    fids = [r for r in records if "fid" in r or "fid_nonstandard" in r]
    if fids:
        standard = all("fid" in r for r in fids)
        label = "FID" if standard else "FID (non-standard Inception weights)"
        ax2 = ax.twinx()
        ax2.plot([r["kimg"] for r in fids], [r.get("fid", r.get("fid_nonstandard")) for r in fids],
                 color="tab:green", marker="o", label=label)
        ax2.set_ylabel(label)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper right")
    ax.set_title(f"{out.parent.parent.name}: losses (EMA {smoothing})")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _figure(rows: int, cols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(10, 2.6 * rows), dpi=100, squeeze=False)
    return plt, fig, [ax for row in axes for ax in row]


def plot_curves(records: list[dict], out: Path, smoothing: float) -> None:
    """Losses, D's outputs, the regularisers and ADA's p (where present), one panel each."""
    steps = [r for r in records if "loss/D" in r]
    groups = [("losses", ["loss/D", "loss/G"]), ("D outputs", ["D(x)", "D(G(z))"]),
              ("regularisers", sorted({k for r in steps for k in r if k.startswith("reg/")})),
              ("augmentation", [k for k in ("aug/p", "aug/rt") if any(k in r for r in steps)])]
    groups = [(name, keys) for name, keys in groups if keys]
    plt, fig, axes = _figure(len(groups))
    for ax, (name, keys) in zip(axes, groups):
        for key in keys:
            points = [(r["kimg"], r[key]) for r in steps if key in r]
            kimg, values = zip(*points)
            line, = ax.plot(kimg, values, alpha=0.25, linewidth=0.8)
            ax.plot(kimg, smooth(list(values), smoothing), color=line.get_color(), label=key)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("kimg (thousands of real images shown)")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def metric_records(records: list[dict]) -> dict[str, list[tuple[float, int, float]]]:
    """Every metric value in metrics.jsonl: key -> [(kimg, step, value)], in registry order."""
    from . import metrics

    found: dict[str, list[tuple[float, int, float]]] = {}
    for r in records:
        for key in metrics.value_keys(r):
            if "_std" not in key:  # a spread over subsets or splits, not a value to follow
                found.setdefault(key, []).append((r["kimg"], r["step"], r[key]))
    order = [base for name in metrics.METRICS for base in metrics.metric_module(name).LOWER_IS_BETTER]
    return dict(sorted(found.items(), key=lambda kv: (order.index(metrics.base_value(kv[0])), kv[0])))


def best_values(series: dict[str, list[tuple[float, int, float]]]) -> dict[str, dict]:
    from . import metrics

    lower = metrics.directions(list(metrics.METRICS))
    best = {}
    for key, points in series.items():
        down = lower[metrics.base_value(key)]
        kimg, step, value = (min if down else max)(points, key=lambda p: p[2])
        best[key] = {"value": value, "step": step, "kimg": kimg, "better": "lower" if down else "higher"}
    return best


def plot_metrics(series: dict[str, list[tuple[float, int, float]]], best: dict[str, dict], out: Path) -> None:
    plt, fig, axes = _figure(math.ceil(len(series) / 2), 2)
    for ax, (key, points) in zip(axes, series.items()):
        ax.plot([p[0] for p in points], [p[2] for p in points], marker="o", markersize=3)
        ax.plot([best[key]["kimg"]], [best[key]["value"]], marker="*", markersize=14, color="tab:red",
                label=f"best {best[key]['value']:.5g} at {best[key]['kimg']:g} kimg")
        ax.set_title(key, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(series):]:
        ax.axis("off")
    for ax in axes:
        ax.set_xlabel("kimg", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_throughput(records: list[dict], out: Path) -> float:
    """img/s against kimg; returns the median."""
    points = [(r["kimg"], r["img/s"]) for r in records if "img/s" in r]
    plt, fig, (ax,) = _figure(1)
    ax.plot(*zip(*points), marker=".", linewidth=0.8)
    rates = sorted(p[1] for p in points)
    median = rates[len(rates) // 2]
    ax.axhline(median, color="tab:gray", linestyle="--", label=f"median {median:,.0f} img/s")
    ax.set_xlabel("kimg")
    ax.set_ylabel("img/s (all ranks)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return median


def progress_gif(grids: list[Path], out: Path, duration_ms: int) -> int:
    """One frame per sample grid, labelled with its step; the last frame is held longer."""
    frames = []
    for path in grids:
        with Image.open(path) as img:
            frame = img.convert("RGB")
        label = f"step {int(path.stem.split('-')[-1])}"
        draw = ImageDraw.Draw(frame)
        draw.rectangle((0, 0, 7 * len(label) + 6, 14), fill=(0, 0, 0))
        draw.text((3, 2), label, fill=(255, 255, 255))
        frames.append(frame)
    durations = [duration_ms] * (len(frames) - 1) + [duration_ms * 5]
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return len(frames)


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
