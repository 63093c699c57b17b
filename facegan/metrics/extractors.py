"""Feature extractors as a protocol and a table. A metric names the extractor its features come
from (registry.Metric.extractor); TABLE builds each one a run needs from its settings; the feature
pass (features.extract) asks each for the kinds of rows the metrics keep (features.Needs).

Adding an extractor is one module with a class that follows `Extractor`, plus one line in TABLE
(docs/extending.md shows a toy one; tests/test_metrics.py adds it that way). One vocabulary: an
extractor's name is the kind of rows it gives (`vgg16`, `dinov2`, `attributes`), except
Inception's, which gives two (`pool` and `logits`) and the moments FID reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch


class Extractor(Protocol):
    kinds: tuple[str, ...]  # the kinds of rows it gives, as the metrics' Needs name them
    sha256: str  # of its weights: in every record and cache key
    standard: bool  # its weights are the published ones: values are recorded without _nonstandard

    def dims(self) -> dict[str, int]:
        """kind -> feature width."""

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 [B,3,H,W] -> kind -> float32 [B, dim], from one forward."""

    def describe(self) -> dict:
        """What every record says of it: its weights' path, sha256 and whether standard."""

    def resize(self) -> str | None:
        """'VGG16 224': the size it resizes to, for the protocol line (None: it says nothing)."""

    def rows_source(self, kind: str) -> str:
        """The name its rows of `kind` are cached under (with its sha256, part of the cache key)."""

    def note(self) -> str | None:
        """What a record says when its weights are not the standard ones (None when they are)."""


@dataclass(frozen=True)
class Settings:
    """What the table builds extractors from: the device, each extractor's weights by its name
    (None: the standard file, downloaded where missing), and DINOv2's size."""

    device: str | torch.device = "cpu"
    weights: dict[str, str | Path | None] = field(default_factory=dict)
    dinov2_model: str = "dinov2-vit-l-14"


# Each built on first use: the modules load torch-fidelity, torchvision or a classifier's
# dependencies only where a run's metrics need them.
def _inception(s: Settings) -> Extractor:
    from facegan.metrics.inception import Inception  # torch-fidelity

    return Inception(s.weights.get("inception"), s.device)


def _vgg16(s: Settings) -> Extractor:
    from facegan.metrics.vgg import VGG16  # torchvision's VGG16

    return VGG16(s.weights.get("vgg16"), s.device)


def _dinov2(s: Settings) -> Extractor:
    from facegan.metrics.dinov2 import DINOv2  # torch-fidelity's resize

    return DINOv2(s.weights.get("dinov2"), s.device, s.dinov2_model)


def _attributes(s: Settings) -> Extractor:
    from facegan.metrics.classifier import AttributeReader  # the data wing's eval loader (webdataset)

    return AttributeReader.load(s.weights.get("attributes"), s.device)


# The table: extractor name (registry.Metric.extractor) -> how a run builds it.
TABLE: dict[str, Callable[[Settings], Extractor]] = {
    "inception": _inception,
    "vgg16": _vgg16,
    "dinov2": _dinov2,
    "attributes": _attributes,
}


class Extractors:
    """The extractors a run's metrics need, by name (in TABLE's order); calling it on uint8
    images gives the kinds asked for."""

    def __init__(self, by_name: dict[str, Extractor], device: str | torch.device | None = None):
        order = {name: i for i, name in enumerate(TABLE)}
        self.by_name = dict(sorted(by_name.items(), key=lambda kv: order.get(kv[0], len(order))))
        first = next(iter(self.by_name.values()), None)
        self.device = torch.device(device) if device is not None else getattr(first, "device", torch.device("cpu"))

    @classmethod
    def build(cls, names: list[str], settings: Settings) -> Extractors:
        """Each extractor one of `names` (extractor names) needs, and only those; weights checked at once."""
        unknown = [n for n in names if n not in TABLE]
        if unknown:
            raise ValueError(f"extractor {unknown[0]!r}: unknown; registered: {', '.join(TABLE)}")
        return cls({name: TABLE[name](settings) for name in dict.fromkeys(names)}, settings.device)

    @property
    def inception(self):
        """Inception, whose pool3 moments FID reads (None where no metric needs it)."""
        return self.by_name.get("inception")

    def get(self, name: str) -> Extractor | None:
        return self.by_name.get(name)

    def of_kind(self, kind: str) -> Extractor:
        """The extractor that gives rows of `kind`; one line where none of them does."""
        for extractor in self.by_name.values():
            if kind in extractor.kinds:
                return extractor
        raise ValueError(f"a metric needs {kind} features, but no extractor here gives them "
                         f"(extractors: {', '.join(self.by_name) or 'none'})")

    def dims(self) -> dict[str, int]:
        return {k: v for e in self.by_name.values() for k, v in e.dims().items()}

    def __call__(self, images: torch.Tensor, kinds: set[str]) -> dict[str, torch.Tensor]:
        needed = {}  # each extractor once, however many of its kinds are asked for
        for kind in sorted(kinds):
            extractor = self.of_kind(kind)
            needed[id(extractor)] = extractor
        out: dict[str, torch.Tensor] = {}
        for extractor in needed.values():
            out.update(extractor.extract(images))
        return {k: v for k, v in out.items() if k in kinds}
