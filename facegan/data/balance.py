"""Attribute-balanced training streams (--balance, --balance-to).

A GAN reproduces (often amplifies) the skew of its data; an unconditional generator can only be
balanced through what it is shown. The named attributes split the data into cells (every
combination of true and false: 2^k for k names). Each cell gets a target frequency, the product
of each attribute's target (0.5 unless --balance-to says otherwise), and every sample of a cell a
weight: target frequency / data frequency. The stream shows each sample it reads that many times
on average (stochastic rounding: floor(w), plus one with probability w - floor(w)), so an epoch
keeps its length, nothing is dropped for good, and the cells appear at their targets; the
shuffle buffer spreads a sample's copies apart. The draws come from an RNG of their own, seeded
like the stream's, so a balanced stream is a pure function of its seed and resumes exactly.

The cost is repetition: a rare cell's images are shown `weight` times per epoch. Above
REPEAT_WARN a warning says so; an empty cell with a non-zero target is refused.

Pure data code: cells are counted from the samples' json ({"attributes": {name: bool}}, as pack
records them), once per start, with a progress bar.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from facegan.data.attributes import KEY, check_names, parse_condition
from facegan.data.shardset import ShardSet, ShardSetError, iter_shard
from facegan.progress import progress_bar

REPEAT_WARN = 10.0  # a cell whose images would be shown more than this many times per epoch: warned about
DEFAULT_TARGET = 0.5


def parse_targets(text: str, names: tuple[str, ...] | list[str], flag: str = "--balance-to") -> dict[str, float]:
    """'Male=0.5,Young=0.3' -> {name: target share of samples where it is true}; every name must be
    one of --balance's, every share a number in [0, 1]."""
    out: dict[str, float] = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"{flag} {text}: {part!r} is not NAME=SHARE")
        if name not in names:
            raise ValueError(f"{flag} {text}: {name} is not named in --balance ({','.join(names) or 'empty'})")
        try:
            share = float(value)
        except ValueError:
            raise ValueError(f"{flag} {text}: {name}={value} is not a number") from None
        if not 0 <= share <= 1 or math.isnan(share):
            raise ValueError(f"{flag} {text}: {name}={value} must lie in [0, 1]")
        out[name] = share
    return out


def cell_of(meta: dict | None, names: tuple[str, ...], where: str) -> tuple[int, ...]:
    """The sample's cell: 1 where the attribute is true, 0 where false, in `names`' order."""
    attributes = (meta or {}).get(KEY) or {}
    try:
        return tuple(int(bool(attributes[n])) for n in names)
    except KeyError as e:
        raise ShardSetError(f"{where}: no attribute {e.args[0]!r} in its json") from None


def count_cells(shardset: ShardSet, names: tuple[str, ...], progress: bool = False) -> Counter:
    """{cell: samples} over every sample's json, read once (the images are not decoded)."""
    counts: Counter = Counter()
    with progress_bar(shardset.count, "counting attribute cells", enabled=progress, leave=False) as bar:
        for shard in shardset.shards:
            for sample in iter_shard(shard):
                meta = json.loads(bytes(sample["json"])) if "json" in sample else None
                counts[cell_of(meta, names, f"{shard.path}: sample {sample['__key__']}")] += 1
                bar.update()
    return counts


def label(names: tuple[str, ...], cell: tuple[int, ...]) -> str:
    """'Male=1,Young=0'."""
    return ",".join(f"{n}={v}" for n, v in zip(names, cell))


@dataclass(frozen=True)
class Shares:
    """What a balanced stream shows, per attribute (in `names` order): the target share, the
    data's and the stream's. What the attr metric scores an unconditional generator against and
    what its export records; a dict only in files (`to_json`, `from_json`)."""

    names: tuple[str, ...]
    targets: dict[str, float]
    data: dict[str, float]
    stream: dict[str, float]

    def to_json(self) -> dict:
        return {"names": list(self.names), "targets": self.targets, "data": self.data, "stream": self.stream}

    @classmethod
    def from_json(cls, saved: object, where: str) -> Shares:
        """The shares a file holds; one line naming `where` when they are not readable."""
        try:
            names = tuple(saved["names"])
            parts = [{n: float(saved[part][n]) for n in names} for part in ("targets", "data", "stream")]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: its balance record is not readable ({type(e).__name__}: {e})") from None
        if not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{where}: its balance record names no attributes")
        return cls(names, *parts)


@dataclass(frozen=True)
class Balance:
    """The cells of `names`, their sample counts and target shares; weights follow."""

    names: tuple[str, ...]
    targets: dict[str, float]  # per attribute: the share of samples where it is true
    counts: dict[tuple[int, ...], int]  # every cell of the data (empty ones included)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def target(self, cell: tuple[int, ...]) -> float:
        return math.prod(self.targets[n] if v else 1 - self.targets[n] for n, v in zip(self.names, cell))

    def weights(self) -> dict[tuple[int, ...], float]:
        """{cell: times each of its samples is shown per epoch, on average}."""
        return {c: self.target(c) * self.total / n if n else 0.0 for c, n in self.counts.items()}

    def data_shares(self) -> dict[str, float]:
        """{attribute: its share in the data}."""
        return {n: sum(k for c, k in self.counts.items() if c[i]) / self.total for i, n in enumerate(self.names)}

    def stream_shares(self) -> dict[str, float]:
        """{attribute: its expected share in the balanced stream} (the targets, when no cell is empty)."""
        weights, total = self.weights(), self.total
        return {n: sum(weights[c] * k for c, k in self.counts.items() if c[i]) / total
                for i, n in enumerate(self.names)}

    def shares(self) -> Shares:
        return Shares(self.names, dict(self.targets), self.data_shares(), self.stream_shares())

    def to_json(self) -> dict:
        weights = self.weights()
        return {**self.shares().to_json(),
                "cells": [{"cell": label(self.names, c), "samples": n, "target": self.target(c),
                           "repeats": weights[c]} for c, n in sorted(self.counts.items())]}

    def check(self) -> list[str]:
        """One-line error for an empty cell the targets ask for; warnings for heavy repetition."""
        empty = [c for c, n in self.counts.items() if n == 0 and self.target(c) > 0]
        if empty:
            raise ValueError(f"--balance {','.join(self.names)}: no sample has {label(self.names, empty[0])} "
                             f"(of {self.total}); a cell with no images cannot be shown: balance fewer attributes, "
                             "or give that cell a target of 0 with --balance-to")
        warnings = []
        for cell, w in sorted(self.weights().items(), key=lambda x: -x[1]):
            if w > REPEAT_WARN:
                warnings.append(f"--balance: the {self.counts[cell]} images of {label(self.names, cell)} "
                                f"({self.counts[cell] / self.total:.1%} of the data) are shown {w:.1f} times per "
                                f"epoch each (over {REPEAT_WARN:g}): expect the generator to memorise them")
        return warnings

    def rarest(self) -> tuple[tuple[int, ...], float]:
        """(the cell whose images are shown most often, how many times per epoch)."""
        weights = self.weights()
        cell = max(weights, key=weights.get)
        return cell, weights[cell]

    def describe(self) -> str:
        """One line for the run's start: each attribute's data share and stream share, and the repeats."""
        data, stream = self.data_shares(), self.stream_shares()
        shares = ", ".join(f"{n} {data[n]:.1%} -> {stream[n]:.1%}" for n in self.names)
        rare, repeats = self.rarest()
        return (f"balanced stream ({len(self.counts)} cells): {shares}; the rarest cell ({label(self.names, rare)}, "
                f"{self.counts[rare]} images) is shown {repeats:.2f}x per epoch")


def plan(shardset: ShardSet, names: tuple[str, ...], targets: dict[str, float] | None = None,
         progress: bool = False) -> Balance:
    """The balance of `names` over a shard set; unknown attributes (or shards without any) are a
    one-line error naming the flag."""
    names = parse_condition(names, "--balance")
    check_names(names, shardset, "--balance")
    full = {n: (targets or {}).get(n, DEFAULT_TARGET) for n in names}
    counts = count_cells(shardset, names, progress)
    cells = {c: counts.get(c, 0) for c in itertools.product((0, 1), repeat=len(names))}
    return Balance(names, full, cells)


def repeat(samples: Iterable[dict], names: tuple[str, ...], weights: dict[tuple[int, ...], float],
           rng: random.Random) -> Iterator[dict]:
    """Each sample `w` times on average (w: its cell's weight), by stochastic rounding."""
    for sample in samples:
        meta = json.loads(bytes(sample["json"])) if "json" in sample else None
        w = weights[cell_of(meta, names, f"{sample.get('__url__')}: sample {sample['__key__']}")]
        whole = int(w)
        for _ in range(whole + (rng.random() < w - whole)):
            yield sample
