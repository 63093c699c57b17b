"""Faces on request, measured: a conditional run on synthetic faces, judged by an attribute classifier.

    python bench/conditional.py                     # CPU: 32 px, the demo preset, 540 kimg (~9 minutes)
    python bench/conditional.py --preset modern --train-flags "--max-kimg 140 --lr-schedule cosine"

1. Packs --num synthetic faces at --size px (once; they carry CelebA-named attributes).
2. Trains the attribute classifier on them (`python -m facegan.attributes train`, every 10th
   face held out) and reads its held-out accuracy per attribute.
3. Trains a generator conditioned on --attributes for --minutes of wall time
   (`facegan/train.py --condition ... --max-minutes`), and times the whole command.
4. Scores it with `python -m facegan.evaluate --metrics attr`: per attribute, the share of
   --samples generated images whose classified attribute is the one asked (asked at the
   training frequencies).
5. Writes a sweep grid (`python -m facegan.sample --sweep`).

Side by side, per attribute: what a generator that ignores the request would score (its face
shows the attribute at the training frequency p whatever was asked: p^2 + (1-p)^2), the run's
score, and the classifier's held-out accuracy (the most the measure can show). Writes
bench/CONDITIONAL.md (text after its "## Observations" heading is kept) and
bench/conditional-sweep.png.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporting import write_keeping_observations  # noqa: E402  (bench/, the script's folder)

from facegan.data.shardset import load_shardset  # noqa: E402

TARGET = 0.90  # issue 14: the requested attribute shown at least 90% of the time
CLASSIFIER_TARGET = 0.95
# docs/conditional.md's run: 540 kimg (~9 minutes on 2 cores) with an lr anneal over the last 200.
DEFAULT_FLAGS = "--max-kimg 540 --lr-schedule cosine --lr-decay-kimg 200 --lr-final 0.1"


def run(cmd: list[str]) -> str:
    """Run a facegan command from the repository root; its stdout (stderr streams through)."""
    print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout


def last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--attributes", default="Smiling,Eyeglasses", help="comma list to condition on")
    p.add_argument("--preset", default="demo", help="train.py --preset")
    p.add_argument("--minutes", type=float, default=9.5, help="training wall time at most (train.py --max-minutes)")
    p.add_argument("--train-flags", default=DEFAULT_FLAGS, help="more train.py flags, one string")
    p.add_argument("--num", type=int, default=10000, help="synthetic faces to pack")
    p.add_argument("--size", type=int, default=32, choices=(32, 64))
    p.add_argument("--samples", type=int, default=2000, help="generated images scored")
    p.add_argument("--workdir", default="runs/conditional", help="shards, classifier and run")
    p.add_argument("--out", default="bench/CONDITIONAL.md")
    p.add_argument("--fresh", action="store_true", help="repack and retrain the classifier too")
    args = p.parse_args()
    py = sys.executable
    work = Path(args.workdir)  # relative paths stay relative in the commands CONDITIONAL.md quotes
    if work.is_absolute() and work.is_relative_to(ROOT):
        work = work.relative_to(ROOT)
    shards, clf, run_dir = work / f"synthetic-{args.size}", work / "attributes.safetensors", work / "run"

    if args.fresh or not (ROOT / shards / "manifest.json").exists():
        run([py, "-m", "facegan.pack", "synthetic", "--num", str(args.num), "--size", str(args.size), "--out",
             str(shards), "--overwrite", "--readers", "2", "--no-progress"])
    if args.fresh or not (ROOT / clf).exists():
        run([py, "-m", "facegan.attributes", "train", str(shards), "--out", str(clf), "--attributes",
             args.attributes])
    classifier = json.loads((ROOT / clf).with_suffix(".json").read_text())  # its held-out accuracy, per attribute

    train = [py, "facegan/train.py", "--preset", args.preset, "--data", str(shards), "--run-dir", str(run_dir),
             "--condition", args.attributes, "--max-minutes", f"{args.minutes:g}", "--resume", "none",
             *shlex.split(args.train_flags)]
    start = time.perf_counter()
    run(train)
    wall = time.perf_counter() - start
    gen = run_dir / "generator.safetensors"
    scored = last_json(run([py, "-m", "facegan.evaluate", "--generator", str(gen), "--data", str(shards),
                            "--metrics", "attr", "--attr-classifier", str(clf), "--num-samples",
                            str(args.samples), "--seed", "1"]))
    sweep = ROOT / "bench" / "conditional-sweep.png"
    run([py, "-m", "facegan.sample", "--generator", str(gen), "--out", str(sweep), "--sweep", args.attributes,
         "--num", "8", "--seed", "0"])

    manifest = load_shardset(ROOT / shards).manifest
    state = json.loads((ROOT / run_dir / "generator.json").read_text())
    names = args.attributes.split(",")
    lines = [
        "# Faces on request: attribute accuracy of a conditional run", "",
        f"Written by `python bench/conditional.py {shlex.join(sys.argv[1:])}` on {time.strftime('%Y-%m-%d')}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
        f"{', ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ''}.", "",
        f"- Data: {manifest['count']} synthetic faces at {args.size} px (`{shards}`).",
        f"- Classifier: trained on {classifier['train_images']} of them in {classifier['seconds']} s, "
        f"tested on the {classifier['heldout_images']} held out (every 10th).",
        f"- Run: `{shlex.join(train[1:])}`: {wall / 60:.1f} minutes for the whole command (start-up and "
        f"export included), {state['nimg'] / 1000:.0f} kimg.",
        f"- Scored on {scored['num_generated']} generated images, each asked for attributes drawn at the training "
        "frequencies (`evaluate --metrics attr`, seed 1).", "",
        "| attribute | training frequency | request ignored | this run | classifier held-out | target |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        freq = manifest["attributes"][name] / manifest["count"]
        score, ceiling = scored[f"attr/{name}"], classifier["accuracy"][name]
        ok = "met" if score >= TARGET and ceiling >= CLASSIFIER_TARGET else "NOT met"
        lines.append(f"| {name} | {freq:.3f} | {freq ** 2 + (1 - freq) ** 2:.3f} | **{score:.3f}** | {ceiling:.3f} | "
                     f">= {TARGET:.2f} (classifier >= {CLASSIFIER_TARGET:.2f}): {ok} |")
    if "warning" in scored:
        lines += ["", f"Warning from evaluate: {scored['warning']}"]
    lines += ["", "## Sweep grid", "",
              "One row per latent; columns: " + ", ".join(f"{n}=0, {n}=1" for n in names) +
              " (z and the other attributes held).", "", "![sweep](conditional-sweep.png)"]
    write_keeping_observations(ROOT / args.out, lines)
    print("\n".join(lines[-len(names) - 8:]))


if __name__ == "__main__":
    main()
