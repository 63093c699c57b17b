"""The face toolbox on real faces: truncation, style mixing, projection of held-out CelebA faces
and attribute edits, each made by the command docs/toolbox.md shows.

    python bench/toolbox.py --generator runs/quality-sg2/stylegan2-32/seed-0/generator.safetensors \\
        --train-shards runs/quality-sg2/celeba-32-train

The generator is a stylegan2 trained on the CelebA sample's train split (bench/quality.py's run);
the faces projected are the first --faces of the sample's test split (never trained on). The CelebA
sample has no attribute labels, so the edits use a stylegan2 trained on synthetic faces
(--edit-generator) and a classifier trained on their labels (--edit-shards). Without --vgg16-weights, LPIPS runs on
a STAND-IN VGG16 trunk (Kaiming-initialised): its values rank reconstructions of the same faces
only, and the projection adds a pixel term (--mse-weight 1), since a random trunk alone does not
pin pixels down. Writes the pictures into docs/img/ and bench/TOOLBOX.md (text after
"## Observations" is kept).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporting import write_keeping_observations  # noqa: E402  (bench/, the script's folder)

from facegan.metrics.vgg import make_standin_weights  # noqa: E402
from facegan.networks import sampling  # noqa: E402

# The CelebA sample has no attribute labels (no list_attr_celeba.txt) and the synthetic faces no
# Male: the edits are fitted on a stylegan2 trained on synthetic faces, for three of their labels.
ATTRIBUTES = "Smiling,Eyeglasses,Blond_Hair"


def run(cmd: list[str], log: list[str]) -> str:
    shown = "python " + shlex.join(cmd[1:]).replace(str(ROOT) + "/", "")
    print(f"$ {shown}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    log.append(f"`{shown}` ({time.perf_counter() - started:.0f} s)")
    return done.stdout


def pixels(path: str) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)


def held_out_faces(sample: Path, count: int) -> list[Path]:
    """The first `count` images of the CelebA sample's test split (partition 2)."""
    names = [line.split()[0] for line in (sample / "list_eval_partition.txt").read_text().splitlines()
             if line.split()[1:] == ["2"]]
    return [sample / "img_align_celeba" / n for n in names[:count]
            if (sample / "img_align_celeba" / n).exists()][:count]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--generator", default=str(ROOT / "runs/quality-sg2/stylegan2-32/seed-0/generator.safetensors"))
    p.add_argument("--edit-generator", default=str(ROOT / "runs/toolbox/sg2-synthetic/generator.safetensors"),
                   help="the generator the edits are fitted on (trained on --edit-shards)")
    p.add_argument("--edit-shards", default=str(ROOT / "shards/synthetic-32"),
                   help="shards with attribute labels, to train the attribute classifier on")
    p.add_argument("--sample-data", default=str(ROOT.parent / "shared" / "data" / "celeba-sample"))
    p.add_argument("--vgg16-weights", default="", help="the standard VGG16 file (default: a stand-in)")
    p.add_argument("--faces", type=int, default=8)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--samples", type=int, default=5000, help="generated faces the directions are fitted on")
    p.add_argument("--workdir", default=str(ROOT / "runs" / "toolbox"))
    p.add_argument("--img-dir", default=str(ROOT / "docs" / "img"))
    p.add_argument("--out", default=str(ROOT / "bench" / "TOOLBOX.md"))
    args = p.parse_args()
    work, img = Path(args.workdir), Path(args.img_dir)
    work.mkdir(parents=True, exist_ok=True)
    img.mkdir(parents=True, exist_ok=True)
    py, g, log = sys.executable, args.generator, []
    vgg = args.vgg16_weights or str(make_standin_weights(work / "standin-vgg16.pth"))
    mse = [] if args.vgg16_weights else ["--mse-weight", "1"]

    run([py, "-m", "facegan.sample", "--generator", g, "--out", str(img / "toolbox-psi.png"),
         "--psi-sweep", "1,0.7,0.4,0", "--num", "8"], log)
    run([py, "-m", "facegan.sample", "--generator", g, "--out", str(img / "toolbox-mix.png"),
         "--style-mix", "4x6", "--mix-layers", "0-3"], log)
    faces = held_out_faces(Path(args.sample_data), args.faces)
    out = run([py, "-m", "facegan.project", "--generator", g, "--target", *map(str, faces), "--out",
               str(work / "projected"), "--steps", str(args.steps), "--vgg16-weights", vgg, "--no-progress", *mse], log)
    projections = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    tiles = [pixels(r["target"]) for r in projections] + [pixels(r["projected"]) for r in projections]
    sampling.grid_image(torch.stack(tiles), nrow=len(projections)).save(img / "toolbox-projection.png")
    classifier = work / "attributes.safetensors"
    run([py, "-m", "facegan.attributes", "train", args.edit_shards, "--out", str(classifier), "--attributes",
         ATTRIBUTES], log)
    eg = args.edit_generator
    run([py, "-m", "facegan.sample", "--generator", eg, "--out", str(img / "toolbox-synthetic.png"), "--num", "32"],
        log)
    fit = run([py, "-m", "facegan.edit", "fit", "--generator", eg, "--classifier", str(classifier), "--attributes",
               ATTRIBUTES, "--samples", str(args.samples), "--out", str(work / "directions.safetensors"),
               "--no-progress"], log)
    for name in ATTRIBUTES.split(","):
        run([py, "-m", "facegan.edit", "apply", "--generator", eg, "--directions", str(work / "directions.safetensors"),
             "--sweep", name, "--num", "6", "--range", "3", "--out", str(img / f"toolbox-{name.lower()}.png")], log)

    lines = ["# The face toolbox on CelebA-sample faces", "",
             f"Written by `python bench/toolbox.py {shlex.join(sys.argv[1:])}` on {time.strftime('%Y-%m-%d')}; "
             f"generator `{Path(g).relative_to(ROOT) if Path(g).is_relative_to(ROOT) else g}`.", "",
             "LPIPS: " + ("standard VGG16 weights." if args.vgg16_weights else
                          "**stand-in VGG16 trunk (Kaiming-initialised): not comparable to published LPIPS**; the "
                          "projection adds a pixel MSE term (`--mse-weight 1`)."), "",
             "## Commands", "", *[f"- {c}" for c in log], "",
             f"## Projection of {len(projections)} held-out faces (test split), {args.steps} steps", "",
             "| face | LPIPS | pixel MSE ([0,1]) |", "|---|---|---|",
             *[f"| {Path(r['image']).name} | {r['lpips']:.4f} | {r['mse']:.4f} |" for r in projections],
             f"| mean | {sum(r['lpips'] for r in projections) / len(projections):.4f} | "
             f"{sum(r['mse'] for r in projections) / len(projections):.4f} |", "",
             "![targets above, projections below](../docs/img/toolbox-projection.png)", "",
             f"## Directions (`facegan.edit fit` on `{Path(eg).name}`, trained on synthetic faces)", "",
             "![its samples](../docs/img/toolbox-synthetic.png)", "", "```", fit.strip(), "```", ""]
    lines += [f"![{n}](../docs/img/toolbox-{n.lower()}.png)\n" for n in ATTRIBUTES.split(",")]
    lines += ["Truncation (rows psi 1, 0.7, 0.4, 0) and style mixing:", "",
              "![psi](../docs/img/toolbox-psi.png)", "", "![mix](../docs/img/toolbox-mix.png)"]
    write_keeping_observations(Path(args.out), lines)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
