"""FD-DINOv2 (Stein et al. 2023): the Frechet distance between Gaussians fitted to DINOv2 features
(the CLS token, dinov2.py) of the two sets; torch-fidelity's statistics and formula
(`fid_features_to_statistics`, `fid_statistics_to_metric`) on torch-fidelity's preprocessing, so
it equals `calculate_metrics(fid=True, feature_extractor="dinov2-vit-l-14")` on the same images
and weights (tested). Values from dgm-eval, which resizes bicubically, differ."""

from __future__ import annotations

from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

from facegan.metrics.features import Features, Needs

NEEDS = Needs(rows=frozenset({"dinov2"}))
REAL_NEEDS = Needs(rows=frozenset({"dinov2"}))


def compute(fake: Features, real: Features) -> dict[str, float]:
    a, b = (fid_features_to_statistics(f.rows["dinov2"]) for f in (fake, real))
    return {"fd_dinov2": float(fid_statistics_to_metric(a, b, False)[KEY_METRIC_FID])}
