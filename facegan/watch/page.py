"""The run report's page: RUN/report/index.html, one self-contained file beside its images.

No network, no JavaScript library: the figures are PNGs written by report.py, the sample grids
are copied into report/grids/, and a dozen lines of inline script drive the grid slider. It
opens from the file system (file://) in any browser, and the folder can be copied elsewhere.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

MAX_GRIDS = 60  # grids copied for the slider: evenly spaced over the run, the last always kept

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2430}
header{background:#1d2430;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#b9c2d0;font-size:14px}
main{max-width:1200px;margin:0 auto;padding:18px 28px}
section{background:#fff;border:1px solid #e1e5eb;border-radius:8px;margin:0 0 18px;padding:14px 18px}
h2{font-size:17px;margin:0 0 10px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:18px}
.card{background:#fff;border:1px solid #e1e5eb;border-radius:8px;padding:10px 16px;min-width:150px}
.card b{display:block;font-size:20px} .card span{color:#5b6678;font-size:13px}
img.figure{max-width:100%} .grids{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.grids figure{margin:0} figcaption{color:#5b6678;font-size:13px;margin-top:4px}
img.grid{image-rendering:pixelated;width:340px;border:1px solid #e1e5eb}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 10px;border-bottom:1px solid #eef0f3;text-align:left}
.config{columns:3;column-gap:24px} .config div{break-inside:avoid;font-size:13px;padding:1px 0}
.config code{color:#5b6678} .warn{color:#9a5b00;font-size:13px} input[type=range]{width:340px}
"""

SLIDER = """
const grids = GRIDS;
const slider = document.getElementById('slider'), img = document.getElementById('slide'),
      label = document.getElementById('slide-label');
function show(i) { img.src = grids[i].file; label.textContent = 'step ' + grids[i].step + ', ' +
                   grids[i].kimg + ' kimg (' + (i + 1) + ' of ' + grids.length + ')'; }
slider.max = grids.length - 1; slider.value = grids.length - 1;
slider.addEventListener('input', () => show(Number(slider.value))); show(grids.length - 1);
"""


def pick(items: list, most: int) -> list:
    """At most `most` items, evenly spaced, the first and the last kept."""
    if len(items) <= most:
        return items
    chosen = {round(i * (len(items) - 1) / (most - 1)) for i in range(most)}
    return [items[i] for i in sorted(chosen)]


def copy_grids(grids: list[Path], out: Path, kimg_at: dict[int, float]) -> list[dict]:
    """The slider's grids, copied into out/grids/: [{file, step, kimg}]. A copy already there (of
    the same size) is kept, so a report rewritten during training copies only the new grids;
    copies no longer picked are removed."""
    folder = out / "grids"
    folder.mkdir(parents=True, exist_ok=True)
    picked = pick(grids, MAX_GRIDS)
    for stale in set(p.name for p in folder.iterdir()) - {p.name for p in picked}:
        (folder / stale).unlink()
    shown = []
    for path in picked:
        copy = folder / path.name
        if not (copy.is_file() and copy.stat().st_size == path.stat().st_size):
            shutil.copyfile(path, copy)
        step = int(path.stem.split("-")[-1])
        kimg = kimg_at.get(step)
        shown.append({"file": f"grids/{path.name}", "step": step, "kimg": "?" if kimg is None else f"{kimg:g}"})
    return shown


def _e(text) -> str:
    return html.escape(str(text))


def _cards(cards: list[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(f"<div class='card'><b>{_e(v)}</b><span>{_e(k)}</span></div>"
                                            for k, v in cards) + "</div>"


def _best_table(best: dict[str, dict]) -> str:
    if not best:
        return ""
    rows = "".join(f"<tr><td>{_e(key)}</td><td>{b['value']:.5g}</td><td>{_e(b['better'])}</td>"
                   f"<td>{b['step']}</td><td>{b['kimg']:g}</td></tr>" for key, b in best.items())
    return ("<table><tr><th>value</th><th>best</th><th>better when</th><th>step</th><th>kimg</th></tr>"
            f"{rows}</table>")


def _rows(rows) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def write_page(out: Path, *, title: str, subtitle: str, cards: list[tuple[str, str]], config: dict,
               figures: dict[str, str], best: dict[str, dict], grids: list[dict], gif: str | None,
               notes: list[str], facts: list[tuple[str, str]] = (), protocol: list[tuple[str, str]] = ()) -> Path:
    """report/index.html from what run_report.py measured and drew (file names relative to `out`).
    `facts`: when, how long, versions, data; `protocol`: how the metrics were measured."""
    parts = [f"<header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p></header><main>", _cards(cards)]
    parts += [f"<p class='warn'>{_e(note)}</p>" for note in notes]
    if facts:
        parts.append("<section><h2>The run</h2>" + _rows(facts) + "</section>")
    if grids:
        last = grids[-1]
        strip = ""
        if gif:
            strip = (f"<figure><img class='grid' src='{_e(gif)}' alt='progress'><figcaption>progress: every grid, "
                     "in step order</figcaption></figure>")
        parts.append(
            "<section><h2>Samples (fixed latents)</h2><div class='grids'>"
            f"<figure><img class='grid' id='slide' src='{_e(last['file'])}' alt='sample grid'><br>"
            "<input type='range' id='slider' min='0' value='0' step='1' aria-label='grid over time'>"
            "<figcaption id='slide-label'></figcaption></figure>" + strip +
            f"<figure><img class='grid' src='{_e(last['file'])}' alt='final grid'><figcaption>final grid: step "
            f"{last['step']}, {_e(last['kimg'])} kimg</figcaption></figure></div></section>")
    extra_metrics = _best_table(best) + ("<h2>Protocol of the latest measurement</h2>" + _rows(protocol)
                                         if protocol else "")
    for name, (heading, extra) in {"metrics": ("Metrics against kimg (best marked)", extra_metrics),
                                   "curves": ("Losses, D outputs and regularisers against kimg", ""),
                                   "throughput": ("Throughput", "")}.items():
        if name in figures:
            parts.append(f"<section><h2>{heading}</h2><img class='figure' src='{_e(figures[name])}' "
                         f"alt='{name}'>{extra}</section>")
    rows = "".join(f"<div><code>{_e(k)}</code> {_e(json.dumps(v) if not isinstance(v, str) else v)}</div>"
                   for k, v in config.items())
    parts.append(f"<section><h2>Config</h2><div class='config'>{rows}</div></section></main>")
    script = f"<script>{SLIDER.replace('GRIDS', json.dumps(grids))}</script>" if grids else ""
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}{script}</body></html>\n")
    path = out / "index.html"
    tmp = path.with_name(".index.html.partial")
    tmp.write_text(page)
    tmp.replace(path)
    return path
