"""Binary attributes to condition on: what a shard set has, how often, and one sample's vector.

Sources record a sample's attributes in its json as {"attributes": {name: bool}} (CelebA's 40
from list_attr_celeba, the synthetic faces' CelebA-named ones). `pack` sums them into the
manifest's "attributes" ({name: number of samples where it is true}, names every sample has);
shard sets packed before that are read once, sample by sample, instead.

A condition is an ordered list of names; a sample's vector is 1.0 where the attribute is true,
0.0 where false, in that order. Pure data code: no devices or networks here.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

from facegan.data.shardset import ShardSet, ShardSetError, iter_shard

KEY = "attributes"  # in a sample's json and in the manifest


class AttributeCounts:
    """Counts of true values per attribute over samples' metadata; an attribute counts only if
    every sample has it (what a condition can rely on)."""

    def __init__(self) -> None:
        self.true: Counter = Counter()
        self.names: set[str] | None = None
        self.samples = 0

    def add(self, meta: dict | None) -> None:
        attributes = (meta or {}).get(KEY) or {}
        self.samples += 1
        self.names = set(attributes) if self.names is None else self.names & set(attributes)
        self.true.update(name for name, value in attributes.items() if value)

    def summary(self) -> dict[str, int]:
        """{name: samples where it is true}, names in sorted order; {} when none is common to all."""
        return {name: self.true[name] for name in sorted(self.names or ())}


def parse_condition(text: str | tuple[str, ...], flag: str = "--condition") -> tuple[str, ...]:
    """'Smiling,Eyeglasses' (or its names) -> ('Smiling', 'Eyeglasses'); '' -> () (unconditional)."""
    if isinstance(text, str):
        text = text.split(",") if text.strip() else []
    names = [n.strip() for n in text]
    shown = ",".join(names)
    if any(not n for n in names):
        raise ValueError(f"{flag} {shown!r}: an empty attribute name")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{flag} {shown!r}: {', '.join(repeated)} named twice")
    return tuple(names)


def _scan(shardset: ShardSet) -> dict[str, int]:
    """The manifest's summary for a shard set packed without one: every sample's json, read once."""
    counts = AttributeCounts()
    for shard in shardset.shards:
        for sample in iter_shard(shard):
            counts.add(json.loads(bytes(sample["json"])) if "json" in sample else None)
    return counts.summary()


def available(shardset: ShardSet) -> dict[str, int]:
    """{attribute: samples where it is true} of a shard set."""
    summary = shardset.manifest.get(KEY)
    return summary if summary is not None else _scan(shardset)


def check_names(names: Iterable[str], shardset: ShardSet, flag: str = "--condition") -> dict[str, float]:
    """{name: its frequency in the shard set}, in the names' order; an attribute the shards do
    not have is a one-line error naming `flag` and listing the ones they have."""
    have = available(shardset)
    missing = [n for n in names if n not in have]
    if missing:
        listed = ", ".join(have) if have else "none (their source records no attributes; CelebA's come from " \
                                              "list_attr_celeba, the synthetic faces have CelebA-named ones)"
        raise ValueError(f"{flag} {','.join(missing)}: not an attribute of the shards at {shardset.root}; "
                         f"they have: {listed}")
    return {n: have[n] / shardset.count for n in names}


def vector(meta: dict | None, names: list[str], where: str) -> list[float]:
    """The sample's attributes `names` as 1.0/0.0; a sample without one is a one-line error."""
    attributes = (meta or {}).get(KEY) or {}
    try:
        return [1.0 if attributes[n] else 0.0 for n in names]
    except KeyError as e:
        raise ShardSetError(f"{where}: no attribute {e.args[0]!r} in its json") from None


