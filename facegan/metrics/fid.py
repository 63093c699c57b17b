"""FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to Inception pool3
features of the two sets. torch-fidelity's formula on facegan's moments."""

from __future__ import annotations

from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

from facegan.metrics.features import FEATURE_DIM, Features, Needs, Stats

NEEDS = Needs(moments=True)  # of the generated set
REAL_NEEDS = Needs(moments=True)


def frechet_distance(a: Stats, b: Stats) -> float:
    """torch-fidelity's FID formula on two sets of statistics."""
    out = fid_statistics_to_metric({"mu": a.mu, "sigma": a.sigma}, {"mu": b.mu, "sigma": b.sigma}, False)
    return float(out[KEY_METRIC_FID])


def compute(fake: Features, real: Features) -> dict[str, float]:
    return {"fid": frechet_distance(real.stats, fake.stats)}


def counts_text(counts: dict, below: float = float("inf")) -> str:
    """ "474 real, 500 generated": the num_* counts (those under `below`)."""
    return ", ".join(f"{v} {k.removeprefix('num_')}" for k, v in counts.items() if k.startswith("num_") and v < below)


def warning(counts: dict) -> str | None:
    """What pytorch-fid and clean-fid warn of: a side with fewer images than the 2048 feature
    dimensions has a singular covariance, and its FID is biased upwards and noisy."""
    sides = counts_text(counts, below=FEATURE_DIM)
    if not sides:
        return None
    return (f"fewer images than the {FEATURE_DIM} feature dimensions ({sides}): the covariance is singular, "
            "so this FID is biased upwards and noisy; compare it only with FIDs taken from the same counts")
