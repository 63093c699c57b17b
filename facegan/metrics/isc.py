"""Inception Score (Salimans et al. 2016): exp E[KL(p(y|x) || p(y))] over Inception's 1008-way
logits of the generated images alone, in 10 splits (mean and std over them). No real set: it
rewards confident, varied classes of ImageNet, so on faces it says little about quality; StudioGAN
reports it, so facegan can too. torch-fidelity's `isc_features_to_metric` (shuffled, seed 2020)."""

from __future__ import annotations

from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

from facegan.metrics.features import Features, Needs

NEEDS = Needs(rows=frozenset({"logits"}))
REAL_NEEDS = None  # IS looks at the generated images only
SPLITS, SEED = 10, 2020  # torch-fidelity's defaults


def splits(num: int) -> int:
    """torch-fidelity's 10 splits, or one per image below 10 (its empty splits would give NaN)."""
    return min(SPLITS, num)


def compute(fake: Features, real: Features | None = None) -> dict[str, float]:
    logits = fake.rows["logits"]
    out = isc_features_to_metric(logits, splits=splits(len(logits)), shuffle=True, rng_seed=SEED)
    return {"is": out[KEY_METRIC_ISC_MEAN], "is_std": out[KEY_METRIC_ISC_STD]}
