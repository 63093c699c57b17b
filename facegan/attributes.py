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
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facegan import conditioning
from facegan.checkpoint import load_into, read_network_meta, write_network
from facegan.config import OneLineErrors
from facegan.data import eval_loader, to_float
from facegan.progress import progress_bar
from facegan.shardset import load_shardset

KIND = "attribute_classifier"
HOLDOUT_EVERY = 10  # every 10th sample (manifest index) is held out
WEAK = 0.85  # held-out accuracy under which the metric calls an attribute's score unreliable


class Classifier(nn.Module):
    """uint8 or [-1,1] float images [B,3,R,R] -> attribute logits [B,K]: conv-BN-ReLU pairs,
    stride 2 down to 4x4, global average pool, a linear map."""

    def __init__(self, resolution: int, attributes: list[str], width: int = 32):
        super().__init__()
        self.resolution, self.attributes = resolution, list(attributes)
        layers: list[nn.Module] = []
        cin = 3
        for i in range(int(math.log2(resolution)) - 2):
            cout = width * min(2**i, 8)
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.Conv2d(cout, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, len(self.attributes))
        self.spec = {"arch": "attribute_classifier",
                     "kwargs": {"resolution": resolution, "attributes": self.attributes, "width": width}}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images) if images.dtype == torch.uint8 else images
        return self.head(self.body(x).mean((2, 3)))


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[Classifier, dict]:
    """The classifier and its metadata (held-out accuracy per attribute), in eval mode."""
    meta = read_network_meta(path)
    if meta["facegan_network"] != KIND:
        raise ValueError(f"{path}: holds a {meta['facegan_network']}, not an attribute classifier "
                         "(python -m facegan.attributes train SHARDS --out FILE makes one)")
    model = Classifier(**meta["spec"]["kwargs"])
    load_into(model, Path(path), KIND)
    return model.to(device).eval(), meta


def _load_images(shards: Path, names: list[str], limit: int, progress: bool) -> tuple[torch.Tensor, ...]:
    """uint8 images, attributes and manifest indices of the first `limit` samples."""
    images, attrs, index = [], [], []
    seen = 0
    bar = progress_bar(limit, "reading", enabled=progress, leave=False)
    for batch in eval_loader(shards, 500, num_workers=0, uint8=True, attributes=names):
        images.append(batch["image"])
        attrs.append(batch["attrs"])
        index.append(batch["index"])
        seen += len(batch["index"])
        bar.update(len(batch["index"]))
        if seen >= limit:
            break
    bar.close()
    return torch.cat(images)[:limit], torch.cat(attrs)[:limit], torch.cat(index)[:limit]


@torch.no_grad()
def predict(model: Classifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """[N,K] 0/1 predictions of uint8 images."""
    model.eval()
    return torch.cat([(model(images[i:i + batch_size]) > 0).float() for i in range(0, len(images), batch_size)])


def train_classifier(shards: str | Path, names: list[str] | None = None, *, epochs: int = 5, batch_size: int = 128,
                     lr: float = 1e-3, width: int = 32, max_images: int = 50000, seed: int = 0,
                     progress: bool = True) -> tuple[Classifier, dict]:
    """Train on the shards' samples but every HOLDOUT_EVERY-th; (model, metadata with held-out accuracy)."""
    shardset = load_shardset(shards)
    have = conditioning.available(shardset)
    names = names or list(have)
    if not names:
        raise ValueError(f"{shards}: the shards have no attributes to learn")
    conditioning.check_names(names, shardset)
    torch.manual_seed(seed)
    images, attrs, index = _load_images(Path(shards), names, min(max_images, shardset.count), progress)
    held = index % HOLDOUT_EVERY == 0
    if held.all() or not held.any():
        raise ValueError(f"{shards}: {len(index)} images are too few to hold every {HOLDOUT_EVERY}th out")
    train_x, train_y, test_x, test_y = images[~held], attrs[~held], images[held], attrs[held]
    model = Classifier(shardset.size, names, width)
    opt = torch.optim.Adam(model.parameters(), lr)
    steps = epochs * math.ceil(len(train_x) / batch_size)
    gen = torch.Generator().manual_seed(seed)
    bar = progress_bar(steps, "training", unit="step", enabled=progress, leave=False)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train_x), generator=gen)
        for i in range(0, len(order), batch_size):
            pick = order[i:i + batch_size]
            x = to_float(train_x[pick])
            flip = torch.rand(len(pick), generator=gen) < 0.5  # mirrored faces keep their attributes
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            loss = F.binary_cross_entropy_with_logits(model(x), train_y[pick])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    accuracy = (predict(model, test_x) == test_y).float().mean(0)
    majority = torch.maximum(test_y.mean(0), 1 - test_y.mean(0))  # always guessing the commoner value
    meta = {"attributes": names, "accuracy": dict(zip(names, accuracy.tolist())),
            "majority_accuracy": dict(zip(names, majority.tolist())), "train_images": len(train_x),
            "heldout_images": len(test_x), "epochs": epochs, "shards": str(shards),
            "content_sha256": shardset.content_hash, "seconds": round(time.perf_counter() - start, 1)}
    return model.eval(), meta


def weak(meta: dict) -> list[str]:
    """The attributes the classifier reads with under WEAK held-out accuracy."""
    return [n for n, a in meta["accuracy"].items() if a < WEAK]


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
        model, meta = train_classifier(args.shards, conditioning.parse_condition(args.attributes) or None,
                                       epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, width=args.width,
                                       max_images=args.max_images, seed=args.seed)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
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
