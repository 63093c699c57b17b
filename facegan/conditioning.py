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

import torch

from facegan.shardset import ShardSet, ShardSetError

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


def parse_condition(text: str) -> list[str]:
    """'Smiling,Eyeglasses' -> ['Smiling', 'Eyeglasses']; '' -> [] (unconditional)."""
    names = [n.strip() for n in text.split(",")] if text.strip() else []
    if any(not n for n in names):
        raise ValueError(f"condition {text!r}: an empty attribute name")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"condition {text!r}: {', '.join(repeated)} named twice")
    return names


def _scan(shardset: ShardSet) -> dict[str, int]:
    """The manifest's summary for a shard set packed without one: every sample's json, read once."""
    from facegan.data import iter_shard  # the data module imports torchvision; only needed here

    counts = AttributeCounts()
    for shard in shardset.shards:
        for sample in iter_shard(shard):
            counts.add(json.loads(bytes(sample["json"])) if "json" in sample else None)
    return counts.summary()


def available(shardset: ShardSet) -> dict[str, int]:
    """{attribute: samples where it is true} of a shard set."""
    summary = shardset.manifest.get(KEY)
    return summary if summary is not None else _scan(shardset)


def check_names(names: Iterable[str], shardset: ShardSet) -> dict[str, float]:
    """{name: its frequency in the shard set}, in the names' order; an attribute the shards do
    not have is a one-line error listing the ones they have."""
    have = available(shardset)
    missing = [n for n in names if n not in have]
    if missing:
        listed = ", ".join(have) if have else "none (their source records no attributes; CelebA's come from " \
                                              "list_attr_celeba, the synthetic faces have CelebA-named ones)"
        raise ValueError(f"--condition {','.join(missing)}: not an attribute of the shards at {shardset.root}; "
                         f"they have: {listed}")
    return {n: have[n] / shardset.count for n in names}


def vector(meta: dict | None, names: list[str], where: str) -> list[float]:
    """The sample's attributes `names` as 1.0/0.0; a sample without one is a one-line error."""
    attributes = (meta or {}).get(KEY) or {}
    try:
        return [1.0 if attributes[n] else 0.0 for n in names]
    except KeyError as e:
        raise ShardSetError(f"{where}: no attribute {e.args[0]!r} in its json") from None


def draw(frequencies: list[float], num: int, generator: torch.Generator | None = None,
         fixed: dict[int, float] | None = None) -> torch.Tensor:
    """[num, K] attribute vectors: attribute k true with probability frequencies[k], drawn
    independently, except the columns `fixed` ({index: 0.0 or 1.0}), set for every row."""
    p = torch.tensor(frequencies, dtype=torch.float32).expand(num, len(frequencies))
    out = (torch.rand(p.shape, generator=generator) < p).float()
    for k, value in (fixed or {}).items():
        out[:, k] = value
    return out


def settings(k: int) -> torch.Tensor:
    """A few settings of k attributes to show side by side: none, each alone, and all (when k > 1)."""
    rows = [torch.zeros(k), *torch.eye(k)]
    return torch.stack(rows + ([torch.ones(k)] if k > 1 else []))


def grid_settings(k: int, num: int, columns: int) -> torch.Tensor:
    """[num, k] attributes of a grid of `num` images, `columns` a row: row r shows setting
    r mod S of `settings(k)`, so each setting appears on whole rows, with other latents."""
    table = settings(k)
    return table[torch.arange(num) // columns % len(table)]


def parse_settings(text: str, names: list[str], flag: str = "--attributes") -> dict[int, float]:
    """'Smiling=1,Eyeglasses=0' -> {index in names: 1.0 or 0.0}; a name the generator was not
    conditioned on, or a value other than 0/1, is a one-line error."""
    fixed: dict[int, float] = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or value.strip() not in ("0", "1"):
            raise ValueError(f"{flag} {part!r}: expected NAME=0 or NAME=1")
        if name.strip() not in names:
            raise ValueError(f"{flag} {name.strip()!r}: the generator is conditioned on "
                             f"{', '.join(names) if names else 'no attributes'}")
        fixed[names.index(name.strip())] = float(value.strip())
    return fixed


def sweep_attributes(base: torch.Tensor, swept: list[int]) -> torch.Tensor:
    """A sweep grid's attributes: for each row of `base` [R,K], 2 columns per swept attribute
    (off, on), the others as in the row -> [R * 2 * len(swept), K], row-major."""
    rows = []
    for row in base:
        for k in swept:
            for value in (0.0, 1.0):
                cell = row.clone()
                cell[k] = value
                rows.append(cell)
    return torch.stack(rows)
