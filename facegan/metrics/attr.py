"""Attribute accuracy of a conditional generator: how often its images show the attributes they
were asked for, as judged by an attribute classifier trained on real shards
(`python -m facegan.attributes train`). The requested attributes are drawn from the generator's
training frequencies (seeded, like the latents); `attr` is the mean over attributes and
`attr/<name>` each one's share. An attribute the classifier itself reads with under 85%
held-out accuracy is named in the record's warning: its score says more about the classifier.

An unconditional generator trained on a balanced stream (--balance) is scored against its
targets instead: `attr_generated/<name>` is the share of its images the classifier sees the
attribute in, beside `attr_data/<name>` (the data's share) and `attr_target/<name>`;
`attr/<name>` is 1 - |generated - target| and `attr` their mean (1: every share on target)."""

from __future__ import annotations

from facegan.metrics.features import Features, Needs

NEEDS = Needs(rows=frozenset({"attributes"}))
REAL_NEEDS = None  # no real set: the classifier was trained on one


def compute(fake: Features, real: Features | None) -> dict[str, float]:
    asked = fake.attrs is not None and fake.attrs.shape[1] > 0  # a conditional G was asked for attributes
    if not asked and fake.balance is not None:
        return balanced(fake)
    if not asked:
        raise ValueError("--metrics attr scores a conditional generator (trained with --condition) or one "
                         "trained on a balanced stream (--balance)")
    hits = (fake.rows["attributes"] == fake.attrs).float().mean(0)  # [K]
    return {"attr": float(hits.mean()), **{f"attr/{n}": float(h) for n, h in zip(fake.attr_names, hits)}}


def balanced(fake: Features) -> dict[str, float]:
    shares = fake.rows["attributes"].mean(0)  # [K]: the classifier's verdicts, in the balanced names' order
    out, gaps = {}, []
    for name, share in zip(fake.attr_names, shares.tolist()):
        target = fake.balance.targets[name]
        gaps.append(abs(share - target))
        out.update({f"attr/{name}": 1 - gaps[-1], f"attr_generated/{name}": share,
                    f"attr_data/{name}": fake.balance.data[name], f"attr_target/{name}": target})
    return {"attr": 1 - sum(gaps) / len(gaps), **out}
