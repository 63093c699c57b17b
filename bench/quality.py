"""The quality study: facegan's recipes at equal wall-clock budgets on real CelebA faces.

    python bench/quality.py                               # CPU: 32 px, 6 minutes per recipe
    python bench/quality.py --size 64 --minutes 20        # on a GPU
    python bench/quality.py --seeds 0,1,2                 # each recipe at 3 seeds, tables of their mean

Packs the CelebA sample (`../shared/data/celeba-sample`, official splits) once: the train split
to train on, the val and test splits to measure on. Each recipe then trains for --minutes of
wall time in --marks equal starts of `facegan/train.py --max-minutes` (each start resumes the
last; start-up time is not counted), and after each start its exported generator (EMA-G where
the recipe has EMA) is scored: FID of --samples generated images against val and against test.

The Inception network is a STAND-IN (torch-fidelity's InceptionV3 architecture, Kaiming-
initialised, seed 0) unless --inception-weights gives the standard weights: its FIDs rank
recipes against each other on the same images but are not comparable to published FIDs.

Writes bench/QUALITY.md (tables and grids; text after its "## Observations" heading is kept) and
bench/quality-<recipe>-<size>.png (named after --out), each recipe's last fixed-latent grid.

Every scored start is also appended to <workdir>/results.jsonl with the settings it ran under. A
recipe and seed whose starts are all there under the same settings (size, minutes, marks,
samples, train flags, the recipe's flags, the Inception weights) is not trained again, so a
study cut short, or one given more seeds or recipes, redoes only what is missing; --fresh
retrains everything, and --report-only trains nothing and writes up what results.jsonl holds.
The key does not cover facegan's code: after changing a network, loss or preset, pass --fresh.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporting import write_keeping_observations  # noqa: E402  (bench/, the script's folder)

from facegan.data.shardset import load_shardset  # noqa: E402
from facegan.metrics import features, fid  # noqa: E402
from facegan.metrics.inception import Inception, make_standin_weights  # noqa: E402
from facegan.networks import exports  # noqa: E402

# Each recipe is a preset as users run it; resnet is the strong recipe (hinge, spectral norm,
# EMA) on the SNGAN-style ResNet, at width 32 so that a CPU step takes about as long as modern's.
# The default --recipes are dcgan, strong, resnet and modern; others are variants to compare against them.
RECIPES = {
    "dcgan": ["--preset", "dcgan"],
    "strong": ["--preset", "strong"],
    "resnet": ["--preset", "strong", "--arch", "resnet", "--ngf", "32", "--ndf", "32"],
    "modern": ["--preset", "modern"],
    "stylegan2": ["--preset", "stylegan2"],
    # modern with the paper's 2 residual blocks per stage (the 32 px preset has 1): slower per image
    "modern-2blocks": ["--preset", "modern", "--g-blocks", "2", "--d-blocks", "2"],
    # StyleGAN2-ADA's small-data settings at facegan's widths (with an anneal: see --recipe-flags)
}
EXTRA: dict[str, list[str]] = {}  # --recipe-flags: more flags for one recipe (a planned length, say)
MEANS = ("kimg", "step", "img/s", "fid_val", "fid_test")  # averaged over seeds


def flags(recipe: str) -> list[str]:
    """The recipe's train.py flags, with those --recipe-flags gave it."""
    return [*RECIPES[recipe], *EXTRA.get(recipe, [])]


def pack(sample: Path, split: str, size: int, out: Path) -> Path:
    if not (out / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "facegan.pack", "celeba", str(sample), "--split", split,
                        "--size", str(size), "--out", str(out), "--overwrite", "--no-progress",
                        "--shard-size", "250", "--readers", "2"], check=True, cwd=ROOT)
    return out


def train_start(recipe: str, data: Path, run: Path, minutes: float, extra: list[str]) -> None:
    cmd = [sys.executable, "facegan/train.py", *flags(recipe), "--data", str(data), "--run-dir", str(run),
           "--max-minutes", f"{minutes:g}", "--resume", "auto", "--ckpt-every", "1000000",
           "--sample-every", "1000000", "--log-every", "50", *extra]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def progress(run: Path) -> dict:
    """Step and kimg of the exported generator (where the start ended), img/s of the last log line."""
    export = json.loads((run / "generator.json").read_text())
    log = run / "metrics.jsonl"  # absent when the start ended before its first log line
    lines = [json.loads(line) for line in log.read_text().splitlines() if line] if log.exists() else []
    speeds = [r["img/s"] for r in lines if "img/s" in r]
    return {"step": export["step"], "kimg": export["nimg"] / 1000, "img/s": speeds[-1] if speeds else math.nan}


def score(inception: Inception, generator: Path, refs: dict, samples: int) -> dict[str, float]:
    g, _ = exports.load_generator(generator)
    stats = features.generator_stats(inception, g, samples, g.z_dim, seed=123, batch_size=50)
    return {name: fid.frechet_distance(stats, ref) for name, ref in refs.items()}


def train_and_score(args, recipe: str, seed: int, train: Path, run: Path, inception: Inception, refs: dict,
                    counts: dict, results: Path, key: dict) -> list[dict]:
    """Train `recipe` at `seed` afresh in --marks starts, scoring after each; every row is printed
    and appended to results.jsonl under `key` as soon as it exists."""
    shutil.rmtree(run, ignore_errors=True)
    rows = []
    for mark in range(1, args.marks + 1):
        train_start(recipe, train, run, args.minutes / args.marks, [*args.train_flags.split(), "--seed", str(seed)])
        fid = score(inception, run / "generator.safetensors", refs, args.samples)
        rec = progress(run)
        rows.append({"recipe": recipe, "seed": seed, "mark": mark, "minutes": args.minutes * mark / args.marks,
                     "kimg": rec["kimg"], "step": rec["step"], "img/s": rec["img/s"],
                     "fid_val": fid["val"], "fid_test": fid["test"], **counts})
        print(json.dumps(rows[-1]), flush=True)
        with results.open("a") as f:
            f.write(json.dumps({"key": key, "row": rows[-1]}) + "\n")
    return rows


def run_key(args, recipe: str, seed: int, weights: str) -> dict:
    """What a recipe-and-seed's results depend on: reused only when all of it matches."""
    return {"recipe": recipe, "seed": seed, "flags": flags(recipe), "size": args.size, "minutes": args.minutes,
            "marks": args.marks, "samples": args.samples, "train_flags": args.train_flags, "weights": weights}


def stored_rows(results: Path, key: dict, marks: int) -> list[dict] | None:
    """The rows of `key`'s last complete run in results.jsonl (marks 1..marks, in order), or None."""
    runs: list[list[dict]] = []
    lines = results.read_text().splitlines() if results.exists() else []
    for found in (json.loads(line) for line in lines if line.strip()):
        if found["key"] == key:
            if found["row"]["mark"] == 1:
                runs.append([])
            if runs:
                runs[-1].append(found["row"])
    complete = [r for r in runs if [row["mark"] for row in r] == list(range(1, marks + 1))]
    return complete[-1] if complete else None


def mean_over_seeds(rows: list[dict]) -> list[dict]:
    """One row per recipe and mark: numbers averaged over the seeds, each seed's FIDs in `per_seed`."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["recipe"], r["mark"]), []).append(r)
    out = []
    for group in groups.values():
        row = {k: (sum(r[k] for r in group) / len(group) if k in MEANS else v)
               for k, v in group[0].items() if k != "seed"}
        row["per_seed"] = ", ".join(f"{r['seed']}: {r['fid_val']:.2f}/{r['fid_test']:.2f}" for r in group)
        out.append(row)
    return out


def write_report(path: Path, args, rows: list[dict], weights_note: str, grids: dict[str, str],
                 floor: float) -> None:
    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    final = {r["recipe"]: r for r in rows if r["mark"] == args.marks}
    lines = [
        "# Quality study: recipes at equal wall-clock on real CelebA faces", "",
        f"Written by `python bench/quality.py {shlex.join(sys.argv[1:])}` on {time.strftime('%Y-%m-%d')}; "
        f"{torch.__version__}, {torch.get_num_threads()} CPU threads"
        f"{', ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ''}.", "",
        f"- Data: the CelebA sample's official splits at {args.size} px: train {rows[0]['train']} images "
        f"(trained on), val {rows[0]['val']} and test {rows[0]['test']} (measured against).",
        f"- Budget: {args.minutes:g} minutes of training wall time per recipe, in {args.marks} resumed starts "
        "(start-up not counted); FID after each start.",
        f"- FID: {args.samples} generated images (EMA-G where the recipe has EMA) against each split. "
        f"**{weights_note}**", "",
        "Recipes (`facegan/train.py` flags): " + "; ".join(f"{k}: `{' '.join(flags(k))}`" for k in RECIPES
                                                          if k in recipes) + ".", "",
        f"Seeds: {args.seeds} (`--seed`); every figure below is their mean, each seed's FID val/test in the "
        "last column.", "",
        "## Final", "", "| recipe | kimg | steps | img/s | FID val | FID test | per seed |",
        "|---|---|---|---|---|---|---|",
        f"| (real: the val split against test) | | | | {floor:.2f} | | |"]
    for name in sorted(final, key=lambda n: final[n]["fid_val"]):
        r = final[name]
        lines.append(f"| {name} | {r['kimg']:.1f} | {r['step']:.0f} | {r['img/s']:.0f} | {r['fid_val']:.2f} | "
                     f"{r['fid_test']:.2f} | {r['per_seed']} |")
    if final:
        best = min(final, key=lambda n: final[n]["fid_val"])
        others = [n for n in final if n != best]
        if others:
            runner = min(others, key=lambda n: final[n]["fid_val"])
            lines += ["", f"Lowest stand-in FID on val: **{best}**, {final[best]['fid_val']:.2f} against {runner}'s "
                      f"{final[runner]['fid_val']:.2f} (test: {final[best]['fid_test']:.2f} against "
                      f"{final[runner]['fid_test']:.2f})."]
    lines += ["", "## Over time", "", "| recipe | minutes | kimg | FID val | FID test | per seed |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['minutes']:g} | {r['kimg']:.1f} | {r['fid_val']:.2f} | "
                     f"{r['fid_test']:.2f} | {r['per_seed']} |")
    lines += ["", "## Final grids (fixed latents)", ""]
    lines += [f"**{name}**\n\n![{name}]({file})\n" for name, file in grids.items()]
    write_keeping_observations(path, lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipes", default="dcgan,strong,resnet,modern", help="comma list of " + ", ".join(RECIPES))
    p.add_argument("--size", type=int, default=32, choices=(32, 64, 128))
    p.add_argument("--minutes", type=float, default=6.0, help="training wall time per recipe")
    p.add_argument("--marks", type=int, default=2, help="starts per recipe (an FID after each)")
    p.add_argument("--samples", type=int, default=500, help="generated images per FID")
    p.add_argument("--sample-data", default=str(ROOT.parent / "shared" / "data" / "celeba-sample"))
    p.add_argument("--workdir", default=str(ROOT / "runs" / "quality"))
    p.add_argument("--inception-weights", default="", help="standard weights (default: a stand-in)")
    p.add_argument("--out", default=str(ROOT / "bench" / "QUALITY.md"))
    p.add_argument("--train-flags", default="", help="extra flags for every recipe, e.g. '--cpu'")
    p.add_argument("--recipe-flags", action="append", default=[], metavar="RECIPE=FLAGS",
                   help="extra flags for one recipe, e.g. 'modern=--max-kimg 430 --lr-schedule cosine' (repeatable)")
    p.add_argument("--seeds", default="0", help="comma list of training seeds (--seed); the tables give their mean")
    p.add_argument("--fresh", action="store_true", help="retrain runs whose results are in <workdir>/results.jsonl")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the report from <workdir>/results.jsonl (a study cut short)")
    args = p.parse_args()
    recipes = args.recipes.split(",")
    for item in args.recipe_flags:
        name, sep, extra = item.partition("=")
        if not sep or name not in RECIPES:
            p.error(f"--recipe-flags {item!r}: expected RECIPE=FLAGS with RECIPE one of {', '.join(RECIPES)}")
        EXTRA[name] = EXTRA.get(name, []) + extra.split()
    for name in recipes:
        if name not in RECIPES:
            p.error(f"--recipes: unknown {name!r}; expected some of {', '.join(RECIPES)}")
    if any(flag.split("=")[0] == "--seed" for flag in args.train_flags.split()):
        p.error("--train-flags: give seeds with --seeds (it sets --seed per run and keeps the runs apart)")
    if args.fresh and args.report_only:
        p.error("--fresh retrains and --report-only trains nothing: give one of them")
    try:
        seeds = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds {args.seeds!r}: expected a comma list of integers, e.g. 0,1,2")
    sample, work = Path(args.sample_data), Path(args.workdir)
    if not (sample / "img_align_celeba").is_dir():
        p.error(f"--sample-data {sample}: no img_align_celeba/ there (the CelebA sample, ../shared/data)")
    data = {s: pack(sample, s, args.size, work / f"celeba-{args.size}-{s}") for s in ("train", "val", "test")}
    weights = args.inception_weights or str(make_standin_weights(work / "standin-inception.pt"))
    weights_note = ("standard Inception weights" if args.inception_weights else
                    "Stand-in Inception (Kaiming-initialised, not the standard weights): compare rows with "
                    "each other only, never with published FIDs.")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    inception = Inception(weights, device)
    shardsets = {s: load_shardset(path) for s, path in data.items()}
    refs = {s: features.shard_stats(inception, shardsets[s], cache_dir=work / "stats")[0] for s in ("val", "test")}
    counts = {s: shardset.count for s, shardset in shardsets.items()}
    floor = fid.frechet_distance(refs["val"], refs["test"])  # what real faces score: the floor
    rows, grids, results = [], {}, work / "results.jsonl"
    for name in recipes:
        for seed in seeds:
            run = work / f"{name}-{args.size}" / f"seed-{seed}"
            key = run_key(args, name, seed, inception.sha256)
            stored = None if args.fresh else stored_rows(results, key, args.marks)
            if stored and (run / "samples").is_dir():  # its grid is still there too
                rows += stored
                print(f"{name} seed {seed}: reusing its results in {results}", flush=True)
            elif args.report_only:
                print(f"{name} seed {seed}: no complete results in {results} (or its run folder is gone); "
                      "left out of the report", flush=True)
                continue
            else:
                rows += train_and_score(args, name, seed, data["train"], run, inception, refs, counts,
                                        results, key)
            if seed == seeds[0]:  # the grid shown is the first seed's
                grid = sorted((run / "samples").glob("step-*.png"))[-1]
                grids[name] = f"{Path(args.out).stem.lower()}-{name}-{args.size}.png"  # beside --out
                shutil.copy(grid, Path(args.out).parent / grids[name])
        if rows:
            write_report(Path(args.out), args, mean_over_seeds(rows), weights_note, grids, floor)


if __name__ == "__main__":
    main()
