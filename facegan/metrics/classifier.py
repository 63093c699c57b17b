"""The attribute classifier behind `--metrics attr`: a small CNN trained on real shards' attribute
labels (python -m facegan.attributes train), with its held-out accuracy per attribute, exported
like a network (safetensors + spec) and loaded by the metric."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facegan.data.attributes import available, check_names
from facegan.data.decode import to_float
from facegan.data.shardset import load_shardset
from facegan.data.stream import eval_loader
from facegan.files import sha256_file
from facegan.networks.exports import load_into, read_network_meta
from facegan.progress import progress_bar

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
    have = available(shardset)
    names = names or list(have)
    if not names:
        raise ValueError(f"{shards}: the shards have no attributes to learn")
    check_names(names, shardset, "--attributes")
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


class AttributeReader:
    """The attribute classifier as an extractor (facegan.metrics.extractors): 0/1 verdicts on the
    attributes `select`ed (a conditional generator's, or a balanced stream's), in that order. It is
    the user's own network, so there is no standard one: its values never get _nonstandard."""

    kinds = ("attributes",)
    standard = True

    def __init__(self, model: Classifier, meta: dict, sha256: str = ""):
        self.model, self.meta, self.sha256 = model, meta, sha256
        self.columns: list[int] = []
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, path: str | Path | None, device: str | torch.device = "cpu") -> AttributeReader:
        if not path:
            raise ValueError("--metrics attr needs --attr-classifier FILE (made by python -m facegan.attributes "
                             "train SHARDS --out FILE)")
        return cls(*load_classifier(path, device), sha256=sha256_file(path))

    def select(self, names: list[str]) -> None:
        """Read the classifier's outputs for `names`, in that order."""
        known = self.model.attributes
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"the attribute classifier was not trained on {', '.join(missing)}; it knows "
                             f"{', '.join(known)}")
        self.columns = [known.index(n) for n in names]

    def dims(self) -> dict[str, int]:
        return {"attributes": len(self.columns)}

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"attributes": (self.model(images.to(self.device))[:, self.columns] > 0).float()}  # 0/1 as asked

    def describe(self) -> dict:
        return {}

    def resize(self) -> None:
        return None

    def rows_source(self, kind: str) -> str:
        return "attributes-rows"

    def note(self) -> None:
        return None
