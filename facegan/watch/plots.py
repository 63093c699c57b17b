"""The report's pictures: losses, D's outputs and the other logged curves against kimg (smoothed),
each metric with its best marked, throughput, and an animated GIF of the sample grids.
matplotlib is imported where a plot is drawn (it is slow to import and only the report needs it)."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw


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
        kimg = [r["kimg"] for r in steps if key in r]
        values = [r[key] for r in steps if key in r]
        ax.plot(kimg, values, color=color, alpha=0.2, linewidth=0.8)
        ax.plot(kimg, smooth(values, smoothing), color=color, label=key)
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
    groups = [(name, [k for k in keys if any(k in r for r in steps)]) for name, keys in groups]
    groups = [(name, keys) for name, keys in groups if keys]  # (a hand-made file may lack D's outputs)
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
