"""Balanced streams, measured: an unconditional GAN on faces with 10% Eyeglasses, trained with and
without `--balance Eyeglasses` for the same number of images, side by side in one command.

    python bench/balance.py                          # CPU: 32 px, the demo preset, 150 kimg per run
    python bench/balance.py --kimg 400 --preset modern

1. Packs --num synthetic faces at 32 px with exactly --share of them wearing glasses
   (`pack synthetic --attribute-share Eyeglasses=0.1`).
2. Trains the attribute classifier on them (`python -m facegan.attributes train`).
3. Trains the two runs at once, each pinned to its own CPU core with one thread, so neither gets
   more of the machine: `--balance Eyeglasses` and plain, same preset, seed and --kimg.
4. Judges --samples generated faces of each run's export with the classifier, beside the data's
   share and the target, and writes bench/BALANCE.md and one grid per run into docs/img/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facegan.data.shardset import load_shardset  # noqa: E402
from facegan.metrics import classifier  # noqa: E402
from facegan.networks import exports, sampling  # noqa: E402


def run(cmd: list[str], **kw) -> subprocess.Popen:
    print("+", " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, cwd=ROOT, **kw)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, default=ROOT / "runs" / "balance")
    p.add_argument("--num", type=int, default=10000, help="faces to pack")
    p.add_argument("--share", type=float, default=0.1, help="share of them with Eyeglasses")
    p.add_argument("--preset", default="demo")
    p.add_argument("--kimg", type=float, default=150, help="images shown to each run, in thousands")
    p.add_argument("--samples", type=int, default=2000, help="generated faces judged per run")
    p.add_argument("--seeds", default="0", help="comma list: a plain and a balanced run per seed")
    args = p.parse_args()
    work = args.workdir
    shards = work / f"glasses{round(100 * args.share)}-32"
    py = sys.executable
    if not (shards / "manifest.json").is_file():
        run([py, "-m", "facegan.pack", "synthetic", "--num", str(args.num), "--size", "32", "--attribute-share",
             f"Eyeglasses={args.share}", "--out", str(shards), "--overwrite", "--readers", "2",
             "--no-progress"]).wait()
    clf = work / "eyeglasses-classifier.safetensors"
    if not clf.is_file():
        run([py, "-m", "facegan.attributes", "train", str(shards), "--attributes", "Eyeglasses,Smiling",
             "--out", str(clf), "--epochs", "8"]).wait()
    model, meta = classifier.load_classifier(clf)
    kinds = {"plain": [], "balanced": ["--balance", "Eyeglasses"]}
    seeds = [int(x) for x in args.seeds.split(",")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    for seed in seeds:  # the two runs of a seed at once, one core each
        procs, started = {}, time.time()
        for core, (kind, extra) in enumerate(kinds.items()):
            out = work / f"{kind}-s{seed}"
            if (out / "generator.safetensors").is_file() and (out / "done").is_file():
                continue
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            cmd = ["taskset", "-c", str(core % (os.cpu_count() or 1)), py, "facegan/train.py", "--preset",
                   args.preset, "--data", str(shards), "--run-dir", str(out), "--max-kimg", str(args.kimg),
                   "--seed", str(seed), "--num-workers", "1", "--resume", "none", *extra]
            procs[out] = run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(out / "train.log", "w"))
        for out, proc in procs.items():
            if proc.wait() != 0:
                print(f"failed: see {out / 'train.log'}", file=sys.stderr)
                return 1
            (out / "done").write_text(f"{time.time() - started:.0f} s\n")
    data_share = load_shardset(shards).manifest["attributes"]["Eyeglasses"] / load_shardset(shards).count
    rows = []
    for seed, kind in [(seed, kind) for seed in seeds for kind in kinds]:
        name = f"{kind}-s{seed}"
        g, gmeta = exports.load_generator(work / name / "generator.safetensors")
        images = torch.cat(list(sampling.generate_uint8(g, sampling.latents(args.samples, g.z_dim, 123), 500)))
        verdict = classifier.predict(model, images)
        glasses = float(verdict[:, model.attributes.index("Eyeglasses")].mean())
        smiling = float(verdict[:, model.attributes.index("Smiling")].mean())
        if seed == seeds[0]:
            sampling.write_samples(g, sampling.latents(64, g.z_dim, 7), ROOT / "docs" / "img" / f"balance-{kind}.png")
        target = 0.5 if kind == "balanced" else data_share
        rows.append((name, gmeta.get("nimg", 0) / 1000, glasses, smiling, target,
                     (work / name / "done").read_text().strip()))
    lines = ["# Balanced streams, measured", "",
             f"`python bench/balance.py --preset {args.preset} --kimg {args.kimg:g} --samples {args.samples} "
             f"--seeds {args.seeds}` "
             f"({time.strftime('%Y-%m-%d')}, this 2-core CPU, each run pinned to one core with one thread).", "",
             f"Data: {args.num} synthetic faces at 32 px, exactly {args.share:.0%} with Eyeglasses "
             f"(`pack synthetic --attribute-share Eyeglasses={args.share}`). Judge: the attribute classifier "
             f"trained on them (held-out accuracy Eyeglasses {meta['accuracy'].get('Eyeglasses', float('nan')):.3f}, "
             f"Smiling {meta['accuracy'].get('Smiling', float('nan')):.3f}), on {args.samples} generated faces per "
             "run (seed 123).", "",
             "| run | kimg | Eyeglasses (classifier) | target | Smiling (classifier) | wall time |",
             "|---|---|---|---|---|---|"]
    for name, kimg, glasses, smiling, target, wall in rows:
        lines.append(f"| {name} | {kimg:g} | {glasses:.1%} | {target:.0%} | {smiling:.1%} | {wall} |")
    for kind in kinds:
        mean = sum(r[2] for r in rows if r[0].startswith(kind)) / len(seeds)
        lines.append(f"| **{kind}, mean of {len(seeds)}** | | **{mean:.1%}** | | | |")
    lines += ["", f"Grids (64 faces, the same latents, seed {seeds[0]}): `docs/img/balance-plain.png`, "
              "`docs/img/balance-balanced.png`.", ""]
    (ROOT / "bench" / "BALANCE.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(json.dumps({name: {"eyeglasses": g, "smiling": s} for name, _, g, s, _, _ in rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
