"""Plots of a run folder, with or without W&B: python -m facegan.report RUN

Writes RUN/report/losses.png (smoothed D and G losses against kimg from metrics.jsonl, FID on a
second axis when the run measured it) and RUN/report/progress.gif (the fixed-latent sample
grids, in step order).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from .config import OneLineErrors


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
    metrics, samples = run / "metrics.jsonl", run / "samples"
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run folder")
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics}: not found; is {run} a facegan run folder?")
    records = read_metrics(metrics)
    if not any("loss/D" in r for r in records):
        raise ValueError(f"{metrics}: no loss records yet")
    out = run / "report"
    out.mkdir(exist_ok=True)
    plot_losses(records, out / "losses.png", smoothing)
    written = {"losses": str(out / "losses.png")}
    grids = sorted(samples.glob("step-*.png")) if samples.is_dir() else []
    if grids:
        written["frames"] = progress_gif(grids, out / "progress.gif", duration_ms)
        written["progress"] = str(out / "progress.gif")
    return written


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrors(prog="python -m facegan.report", description="Plot a run folder's losses, FID and "
                      "sample grids.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    print(f"facegan.report: {written['losses']}" + (f", {written['progress']} ({written['frames']} frames)"
                                                    if "progress" in written else " (no sample grids)"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
