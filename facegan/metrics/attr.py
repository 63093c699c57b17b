"""Attribute accuracy of a conditional generator: how often its images show the attributes they
were asked for, as judged by an attribute classifier trained on real shards
(`python -m facegan.attributes train`). The requested attributes are drawn from the generator's
training frequencies (seeded, like the latents); `attr` is the mean over attributes and
`attr/<name>` each one's share. An attribute the classifier itself reads with under 85%
held-out accuracy is named in the record's warning: its score says more about the classifier."""

from __future__ import annotations

from facegan.metrics.features import Features, Needs

NEEDS = Needs(rows=frozenset({"attr"}))
REAL_NEEDS = None  # no real set: the classifier was trained on one


def compute(fake: Features, real: Features | None) -> dict[str, float]:
    if fake.attrs is None:
        raise ValueError("--metrics attr scores a conditional generator (trained with --condition)")
    hits = (fake.rows["attr"] == fake.attrs).float().mean(0)  # [K]
    return {"attr": float(hits.mean()), **{f"attr/{n}": float(h) for n, h in zip(fake.attr_names, hits)}}
