"""A run's report page, RUN/report/index.html (page.py), from metrics.jsonl, config.json and
samples/ alone: the config, loss, D-output and regulariser curves against kimg, every metric
against kimg with its best marked, the sample grids on a slider, the progress GIF, the final grid,
the throughput, and what the run is: when, how long, facegan's version and git commit, the data
set, the metric protocol. Beside it: losses.png, curves.png, metrics.png, throughput.png,
progress.gif and grids/.

Training writes it at every evaluation and at its end (`live=True`: the grids already copied are
kept, and the progress GIF, which reads every grid, waits for the end); `python -m facegan.report
RUN` writes it whenever asked.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from facegan.files import is_number, probe_folder
from facegan.metrics import registry
from facegan.version import __version__
from facegan.watch.page import copy_grids, write_page
from facegan.watch.plots import plot_curves, plot_losses, plot_metrics, plot_throughput, progress_gif

PROTOCOL_KEYS = ("extractor", "weights", "weights_sha256", "vgg16_weights_sha256", "dinov2_model",
                 "dinov2_weights_sha256", "num_real", "num_generated", "seed", "reference", "real_stats_cached",
                 "torch_fidelity", "resize")


PLOTTED = ("loss/", "D(", "reg/", "aug/", "img/s")  # the keys the figures draw (and metric values)


def read_metrics(path: Path) -> list[dict]:
    """Every record of metrics.jsonl; a torn last line (a run killed mid-write) is left out. A line
    that is not a JSON object with numbers under step and kimg (and under every key a figure
    draws) is one ValueError naming the file and line; a null value (not finite when written) is
    left out of its record, as if it had not been measured."""
    records = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if number < len(lines):
                raise ValueError(f"{path}:{number}: not a JSON line") from None
            continue
        problem = _record_problem(record)
        if problem:
            raise ValueError(f"{path}:{number}: {problem}; is this a facegan metrics file?")
        records.append({k: v for k, v in record.items() if v is not None})
    return records


def _record_problem(record: object) -> str | None:
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    for key in ("step", "kimg"):
        if not is_number(record.get(key)):
            return f"{key} is {record.get(key)!r}, not a number"
    drawn = [k for k in record if k.startswith(PLOTTED)] + registry.value_keys(record)
    wrong = [k for k in drawn if record[k] is not None and not is_number(record[k])]
    return f"{wrong[0]} is {record[wrong[0]]!r}, not a number" if wrong else None


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


def git_commit(repo: Path) -> str | None:
    """The commit of the checkout facegan runs from, with "+changes" when it has uncommitted
    changes; None for an installed package or without git."""
    if not (repo / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def about(config: dict, records: list[dict], balance: dict | None = None) -> list[tuple[str, str]]:
    """What the run is: when, how long, which facegan, which data (and the balanced stream's
    shares: RUN/balance.json)."""
    last = [r for r in records if "loss/D" in r][-1]
    rows = [("written", time.strftime("%Y-%m-%d %H:%M:%S %Z"))]
    if "time" in last:
        rows.append(("last logged", time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(last["time"]))))
    if "elapsed_s" in last:
        hours, rest = divmod(int(last["elapsed_s"]), 3600)
        rows.append(("training time", f"{hours}h{rest // 60:02d}m{rest % 60:02d}s (all starts)"))
    commit = git_commit(Path(__file__).resolve().parents[2])
    rows.append(("facegan", __version__ + (f", git {commit}" if commit else "")))
    manifest = Path(config.get("data", "")) / "manifest.json"
    if config.get("data") and manifest.is_file():
        m = json.loads(manifest.read_text())
        source = m.get("source")
        source = source.get("kind", source) if isinstance(source, dict) else source
        split = f" ({m['split']})" if m.get("split") else ""
        rows.append(("data", f"{config['data']}: {m.get('count')} images at {m.get('size')} px, crop "
                             f"{m.get('crop') or 'full'}, from {source or '?'}{split}"))
    elif config.get("data"):
        rows.append(("data", f"{config['data']} (manifest not found from here)"))
    if balance:
        rare = max(balance["cells"], key=lambda c: c["repeats"])
        shares = ", ".join(f"{n} {balance['data'][n]:.1%} in the data, {balance['stream'][n]:.1%} shown"
                           for n in balance["names"])
        rows.append(("balanced stream", f"{shares}; the rarest cell ({rare['cell']}, {rare['samples']} images) "
                                        f"shown {rare['repeats']:.2f}x per epoch"))
    return rows


def protocol(records: list[dict]) -> list[tuple[str, str]]:
    """How the latest measurement was made: extractor, weights and their hash, sample counts."""
    measured = [r for r in records if any(True for _ in registry.value_keys(r))]
    if not measured:
        return []
    last = measured[-1]
    return [(k, _reference(last[k]) if k == "reference" else str(last[k])) for k in PROTOCOL_KEYS if k in last]


def _reference(key: dict) -> str:
    """A real set's data key (metrics.features.data_key) in a line."""
    if "content_sha256" in key:
        return f"shards of {key.get('count')} images at {key.get('size')} px, content sha256 {key['content_sha256']}"
    return f"{key.get('folder')}: {key.get('count')} files, listing sha256 {key.get('files_sha256')}"


def write_report(run: str | Path, smoothing: float = 0.9, duration_ms: int = 300, live: bool = False) -> dict:
    """`live`: from training, at an evaluation: the grids copied before are kept, no progress GIF."""
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
    out = probe_folder(run / "report")  # a file there, or a read-only folder: one line before any figure
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
    if grids and not live:
        written["frames"] = progress_gif(grids, out / "progress.gif", duration_ms)
        written["progress"] = str(out / "progress.gif")
    if grids:
        kimg_at = {r["step"]: r["kimg"] for r in records if "kimg" in r}
        export = run / "generator.json"  # the last step, which a log line may not have reached
        if export.is_file():
            meta = json.loads(export.read_text())
            if "step" in meta and "nimg" in meta:
                kimg_at.setdefault(meta["step"], meta["nimg"] / 1000)
        shown = copy_grids(grids, out, kimg_at)
    config_file = run / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    balance_file = run / "balance.json"
    balance = json.loads(balance_file.read_text()) if balance_file.is_file() else None
    last = steps[-1]
    cards = [("steps", f"{last['step']:,}"), ("kimg", f"{last['kimg']:g}")]
    if median is not None:
        cards.append(("median img/s", f"{median:,.0f}"))
    cards += [(f"best {key} (step {b['step']})", f"{b['value']:.5g}") for key, b in list(best.items())[:4]]
    notes = []
    if any(k.endswith("_nonstandard") for k in series):
        notes.append("Values marked _nonstandard come from stand-in feature extractors (not the standard Inception, "
                     "VGG16 or DINOv2 weights): compare them with each other only, never with published figures.")
    subtitle = " / ".join(str(config[k]) for k in ("preset", "arch", "loss") if k in config)
    written["page"] = str(write_page(out, title=f"facegan run: {run.resolve().name}", subtitle=subtitle,
                                     cards=cards, config=config, figures=figures, best=best, grids=shown,
                                     gif="progress.gif" if (out / "progress.gif").is_file() else None, notes=notes,
                                     facts=about(config, records, balance), protocol=protocol(records)))
    return written


