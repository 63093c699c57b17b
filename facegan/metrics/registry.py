"""The metric registry: names as --metrics takes them, what each reports and which way is better,
and the keys values have in a record. Light on purpose (no torch, no torch-fidelity), so the
config, the trackers and the report import it at the top; the scoring is facegan.metrics.score.

A metric is one module (its `NEEDS`, `REAL_NEEDS` and `compute(fake, real)`, see score.py) and
one entry here. Records store every value under its name (`fid`, `kid`, `is`, `precision`, ...)
only when the extractor that made it has its standard weights; otherwise under
`<name>_nonstandard`, so a stand-in number is never taken for a published-comparable one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    module: str  # the module that computes it
    extractor: str  # the network its features come from: inception, vgg16, dinov2 or attributes
    lower_is_better: dict[str, bool]  # every value it reports -> whether lower is better
    headline: str  # the value --best-by follows by default


METRICS = {
    "fid": Metric("facegan.metrics.fid", "inception", {"fid": True}, "fid"),
    "kid": Metric("facegan.metrics.kid", "inception", {"kid": True, "kid_std": True}, "kid"),
    "is": Metric("facegan.metrics.isc", "inception", {"is": False, "is_std": True}, "is"),
    "pr": Metric("facegan.metrics.prc", "vgg16", {"precision": False, "recall": False, "pr_f_score": False},
                 "precision"),
    "attr": Metric("facegan.metrics.attr", "attributes", {"attr": False}, "attr"),
    "fd_dinov2": Metric("facegan.metrics.fd_dinov2", "dinov2", {"fd_dinov2": True}, "fd_dinov2"),
    "pr_dinov2": Metric("facegan.metrics.pr_dinov2", "dinov2", {"precision_dinov2": False, "recall_dinov2": False,
                                                                 "pr_f_score_dinov2": False}, "precision_dinov2"),
}
DEFAULT = ("fid",)
DINOV2_MODELS = ("dinov2-vit-s-14", "dinov2-vit-b-14", "dinov2-vit-l-14")  # torch-fidelity's names (dinov2.py)
NONSTANDARD = "_nonstandard"


def metric(name: str) -> Metric:
    if name not in METRICS:
        raise ValueError(f"metric {name!r}: unknown; choose from {', '.join(METRICS)}")
    return METRICS[name]


def parse_metrics(text: str | tuple[str, ...], flag: str = "--metrics") -> tuple[str, ...]:
    """'fid,kid' (or its names) -> ('fid', 'kid'), checked: one line naming the flag and the
    unknown name."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    text = ",".join(names)
    if not names:
        raise ValueError(f"{flag}: name at least one metric ({', '.join(METRICS)})")
    for name in names:
        if name not in METRICS:
            raise ValueError(f"{flag} {text}: unknown metric {name!r}; choose from {', '.join(METRICS)}")
    return tuple(dict.fromkeys(names))


def directions(names: tuple[str, ...] | list[str]) -> dict[str, bool]:
    """Every value the metrics report -> whether lower is better (what --best-by may name)."""
    out: dict[str, bool] = {}
    for name in names:
        out.update(metric(name).lower_is_better)
    return out


def base_value(key: str) -> str:
    """The value a record key holds: 'fid_nonstandard' -> 'fid', 'attr/Smiling' -> 'attr'."""
    return key.removesuffix(NONSTANDARD).split("/", 1)[0]


def improves(names: tuple[str, ...] | list[str], by: str, value: float, best: float | None) -> bool:
    """Whether `value` of `by` (a value of `names`' metrics, or one of its parts) beats `best`
    (None: nothing yet)."""
    if best is None:
        return True
    return value < best if directions(names)[base_value(by)] else value > best


def value_key(record: dict, name: str) -> str:
    """The key a value has in a record: `name` or `name_nonstandard`."""
    for key in (name, name + NONSTANDARD):
        if key in record:
            return key
    raise KeyError(f"the record has no {name!r} value (it has: {', '.join(sorted(record))})")


def value_keys(record: dict) -> list[str]:
    """The keys of `record` that hold metric values, in registry order."""
    names = [k for entry in METRICS.values() for k in entry.lower_is_better]
    keys = []
    for name in names:  # a value, then its parts (attr/Smiling, ...) where a metric reports them
        keys += [k for k in (name, name + NONSTANDARD) if k in record]
        keys += sorted(k for k in record if k.startswith(name + "/"))
    return keys


def values(record: dict) -> dict[str, float]:
    """Every metric value of `record` by its key, in registry order (no counts, weights or notes)."""
    return {k: record[k] for k in value_keys(record)}


def ranked(key: str) -> bool:
    """Whether a value has a best worth keeping: not a spread (kid_std, is_std), which says how
    sure another value is, not how good the generator is."""
    return not base_value(key).endswith("_std")


def value(record: dict, name: str) -> float:
    return record[value_key(record, name)]
