"""Scoring: the metrics named in a run or a command, computed from one feature pass per set
(features.py), each value recorded under its key with the weights, counts, notes and warnings
that make it readable (make_record). A metric module defines `NEEDS` and `REAL_NEEDS` (what the
passes over the generated and the real set must keep: see features.Needs; REAL_NEEDS None where it
has no real side) and `compute(fake, real) -> {value name: float}`; what it reports and which
way is better are its entry in registry.py. The maths is torch-fidelity's.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from types import ModuleType

import torch
import torch_fidelity

from facegan.data.balance import Shares
from facegan.data.shardset import ShardSet
from facegan.distribution import ONE, Dist
from facegan.metrics import dinov2
from facegan.metrics import fid as _fid
from facegan.metrics.classifier import WEAK, weak
from facegan.metrics.extractors import TABLE, Extractors, Settings
from facegan.metrics.features import (
    Features,
    Needs,
    data_key,
    extract,
    generated_batches,
    real_features,
)
from facegan.metrics.registry import METRICS, NONSTANDARD, metric
from facegan.networks.common import attributes
from facegan.networks.sampling import latent_attributes


def metric_module(name: str) -> ModuleType:
    """The module that computes metric `name` (imported on first use: it loads torch-fidelity)."""
    return importlib.import_module(metric(name).module)


def needs(names: list[str]) -> tuple[Needs, Needs | None]:
    """What the passes over the generated and the real set must keep for all `names`."""
    fake, real = Needs(), None
    for name in names:
        module = metric_module(name)
        fake = fake | module.NEEDS
        if module.REAL_NEEDS is not None:
            real = module.REAL_NEEDS if real is None else real | module.REAL_NEEDS
    return fake, real


def extractor_names(names: list[str]) -> list[str]:
    """The extractors `names` read their features from, in the table's order."""
    used = {metric(n).extractor for n in names}
    return [name for name in TABLE if name in used] + sorted(used - set(TABLE))


def build_extractors(names: list[str], inception_weights: str | Path | None, vgg_weights: str | Path | None,
                     device: str | torch.device, attr_classifier: str | Path | None = None,
                     dinov2_weights: str | Path | None = None, dinov2_model: str = dinov2.DEFAULT,
                     weights: dict[str, str | Path | None] | None = None) -> Extractors:
    """Each extractor a metric needs, and only those (attr alone needs neither Inception nor VGG16);
    weights are checked at once. `weights` gives another extractor's file by its name."""
    settings = Settings(device, {"inception": inception_weights, "vgg16": vgg_weights, "dinov2": dinov2_weights,
                                 "attributes": attr_classifier, **(weights or {})}, dinov2_model)
    return Extractors.build(extractor_names(names), settings)


def _standard(extractors: Extractors, name: str) -> bool:
    return extractors.get(metric(name).extractor).standard


def compute(names: list[str], extractors: Extractors, fake: Features, real: Features | None) -> dict[str, float]:
    """Every metric's values, each under its record key (with _nonstandard where it applies)."""
    values = {}
    for name in names:
        suffix = "" if _standard(extractors, name) else NONSTANDARD
        values.update({k + suffix: v for k, v in metric_module(name).compute(fake, real).items()})
    return values


def planned_keys(names: list[str], extractors: Extractors) -> list[str]:
    """The keys the records of `names` measured with `extractors` will hold (attr's parts aside)."""
    return [k + ("" if _standard(extractors, name) else NONSTANDARD)
            for name in names for k in metric(name).lower_is_better]


def _used(extractors: Extractors, names: list[str]) -> list:
    return [extractors.get(n) for n in extractor_names(names) if extractors.get(n) is not None]


def describe_extractors(extractors: Extractors, names: list[str]) -> dict:
    """What each extractor the metrics used says of its weights (Inception's whenever it is here)."""
    info = extractors.inception.describe() if extractors.inception is not None else {}
    for extractor in _used(extractors, names):
        info.update(extractor.describe())
    return info


def protocol(names: list[str], extractors: Extractors, reference: dict | None) -> dict:
    """How the values were measured, beside the extractors' weights: the maths' version, how each
    extractor resizes, and which reference set (its content hash, or its listing's)."""
    sizes = [size for extractor in _used(extractors, names) if (size := extractor.resize())]
    out = {"torch_fidelity": torch_fidelity.__version__}
    if sizes:
        out["resize"] = f"torch-fidelity's TF1-compatible bilinear, uint8 in, to {', '.join(sizes)} px"
    if reference is not None:
        out["reference"] = reference
    return out


def make_record(names: list[str], extractors: Extractors, values: dict[str, float], reference: dict | None = None,
                **counts) -> dict:
    """One measurement: the values, the counts, the weights that produced them, the protocol
    (`reference`: features.data_key of the real set), and the notes and warnings they need."""
    record = {**values, **counts, **describe_extractors(extractors, names), **protocol(names, extractors, reference)}
    notes = [note for extractor in _used(extractors, names) if (note := extractor.note())]
    if notes:
        record["note"] = "; ".join(notes)
    warnings = []
    reader = extractors.get("attributes")
    if "attr" in names and reader is not None:
        record["attr_classifier_accuracy"] = reader.meta["accuracy"]
        if weak_ones := weak(reader.meta):
            warnings.append(f"the attribute classifier reads {', '.join(weak_ones)} with under {WEAK:.0%} held-out "
                            "accuracy: those attr scores are unreliable")
    if "fid" in names and (w := _fid.warning(counts)) is not None:
        warnings.append(w)
    num = [v for k, v in counts.items() if k.startswith("num_")]
    kid_subset = metric_module("kid").SUBSET_SIZE
    if "kid" in names and len(num) == 2 and min(num) < kid_subset:
        warnings.append(f"KID subsets of {min(num)} images (torch-fidelity's default is {kid_subset}; a set is "
                        "smaller)")
    generated = counts.get("num_generated", counts.get("num_other"))
    is_splits = metric_module("is").SPLITS
    if "is" in names and generated is not None and generated < is_splits:
        warnings.append(f"IS in {generated} splits of one image (torch-fidelity's default is {is_splits} splits)")
    if warnings:
        record["warning"] = "; ".join(warnings)
    return record



def score_generator(extractors: Extractors, names: list[str], g: torch.nn.Module, real: ShardSet | list[Path],
                    num: int, *, seed: int = 0, batch_size: int = 100, num_workers: int = 2, dist: Dist = ONE,
                    cache_dir: str | Path | None = None, progress: bool = False, balance: Shares | None = None) -> dict:
    """`names` of `num` images of G against a real set, as one record. `balance`: the balanced
    stream an unconditional G was trained on (its export's data.balance), which attr scores it
    against."""
    fake_needs, real_needs = needs(names)
    real_features_, hit = (None, None)
    if real_needs is not None:
        real_features_, hit = real_features(extractors, real, real_needs, batch_size=batch_size,
                                            num_workers=num_workers, dist=dist, cache_dir=cache_dir,
                                            progress=progress)
    balance = None if attributes(g) else balance  # a conditional G is scored on what it was asked
    if "attr" in names:
        if not attributes(g) and balance is None:
            raise ValueError("--metrics attr scores a conditional generator (trained with --condition) or one "
                             "trained on a balanced stream (--balance)")
        extractors.get("attributes").select(attributes(g) or list(balance.names))
    batches = generated_batches(g, num, g.z_dim, seed=seed, batch_size=batch_size, dist=dist)
    fake = extract(extractors, batches, num, fake_needs, dist=dist, progress=progress, desc="generated")
    fake.attrs = latent_attributes(g, num, seed)
    fake.attr_names = attributes(g) or (list(balance.names) if balance is not None else [])
    fake.balance = balance
    counts = {"num_real": real_features_.count if real_features_ is not None else None, "num_generated": num}
    reference = data_key(real) if real_needs is not None else None
    record = make_record(names, extractors, compute(names, extractors, fake, real_features_), reference,
                         **{k: v for k, v in counts.items() if v is not None}, seed=seed)
    if hit is not None:
        record["real_stats_cached"] = hit
    return record


def _format(key: str, v: float) -> str:
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"


def describe(record: dict) -> str:
    """One line for people: the values, the counts and the weights that produced them."""
    where = f"step {record['step']}: " if "step" in record else ""
    shown = []
    for entry in METRICS.values():
        for key in entry.lower_is_better:
            for k in (key, key + NONSTANDARD):
                if k in record and isinstance(record[k], float) and not math.isnan(record[k]):
                    shown.append(f"{key.upper() if key in ('fid', 'kid', 'is') else key} {_format(k, record[k])}")
    for key in sorted(k for k in record if k.startswith("attr_generated/")):
        name = key.split("/", 1)[1]
        shown.append(f"{name} {record[key]:.1%} generated (data {record[f'attr_data/{name}']:.1%}, target "
                     f"{record[f'attr_target/{name}']:.1%})")
    counts = _fid.counts_text(record)
    extra = [counts] if counts else []
    if record.get("standard_weights", True):
        extra.append("standard Inception weights")
    else:
        extra.append(f"NON-STANDARD Inception weights {record['weights']} (sha256 {record['weights_sha256'][:12]}; "
                     "not comparable to published figures)")
    if "vgg16_standard_weights" in record and not record["vgg16_standard_weights"]:
        extra.append(f"NON-STANDARD VGG16 weights (sha256 {record['vgg16_weights_sha256'][:12]})")
    if "warning" in record:
        extra.append(f"warning: {record['warning']}")
    return f"{where}{', '.join(shown)} ({'; '.join(extra)})"
