"""An attribute classifier for measuring conditional generators: trained on real shards, it tells
how often generated faces show the attributes they were asked for (`--metrics attr`).

    python -m facegan.attributes train SHARDS --out attributes.safetensors [--attributes A,B] [--epochs 5]

Every 10th sample of the shards (by manifest index) is held out; the classifier's accuracy on
them, per attribute, is printed and stored in the export. An attribute it reads with under 85%
held-out accuracy is marked weak, and `--metrics attr` says so beside that attribute's score.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facegan.cli import OneLineErrors
from facegan.data.attributes import parse_condition
from facegan.files import probe_folder
from facegan.metrics.classifier import KIND, train_classifier, weak
from facegan.networks.exports import write_network


def table(meta: dict) -> str:
    lines = [f"{'attribute':24s} held-out accuracy  (always the commoner value)"]
    for name in meta["attributes"]:
        flag = "  WEAK: under 85%" if name in weak(meta) else ""
        lines.append(f"{name:24s} {meta['accuracy'][name]:17.3f}  ({meta['majority_accuracy'][name]:.3f}){flag}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrors(prog="python -m facegan.attributes", description=__doc__.split("\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a classifier on real shards and report its held-out accuracy",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    t.add_argument("shards", help="packed shards whose json has attributes")
    t.add_argument("--out", required=True, help="the classifier (.safetensors; a .json beside it)")
    t.add_argument("--attributes", default="", help="comma list (default: every attribute the shards have)")
    t.add_argument("--epochs", type=int, default=5, help="passes over the training images")
    t.add_argument("--batch-size", type=int, default=128, help="images per Adam step")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    t.add_argument("--width", type=int, default=32, help="first conv layer channels (doubled per 2x down, up to 8x)")
    t.add_argument("--max-images", type=int, default=50000, help="read at most this many samples (memory)")
    t.add_argument("--seed", type=int, default=0, help="seed of the initial weights, the order and the flips")
    args = p.parse_args(argv)
    prog = "facegan.attributes"
    if min(args.epochs, args.batch_size, args.width, args.max_images) < 1:
        print(f"{prog}: error: --epochs, --batch-size, --width and --max-images must be at least 1", file=sys.stderr)
        return 2
    try:
        out = Path(args.out)
        probe_folder(out.absolute().parent, "--out")  # before the training, not after it
        model, meta = train_classifier(args.shards, parse_condition(args.attributes) or None,
                                       epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, width=args.width,
                                       max_images=args.max_images, seed=args.seed)
        write_network(model, out, KIND, meta)
    except ValueError as e:  # ShardSetError included
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(table(meta))
    print(json.dumps({"classifier": str(out), **{f"accuracy/{k}": round(v, 4) for k, v in meta["accuracy"].items()}}))
    print(f"{prog}: trained on {meta['train_images']} images, tested on {meta['heldout_images']} held out, "
          f"in {meta['seconds']} s; saved to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
