"""KID (Binkowski et al. 2018): the unbiased MMD^2 between Inception pool3 features of the two
sets under the cubic polynomial kernel, averaged over random subsets. Unbiased at any number of
images, hence the metric for small sets (StyleGAN2-ADA reports it on few-shot data). torch-fidelity's
`kid_features_to_metric` with its defaults: 100 subsets of 1,000 images (fewer where a set is
smaller), seed 2020."""

from __future__ import annotations

from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

from facegan.metrics.features import Features, Needs

NEEDS = Needs(rows=frozenset({"pool"}))
REAL_NEEDS = Needs(rows=frozenset({"pool"}))
SUBSETS, SUBSET_SIZE, SEED = 100, 1000, 2020  # torch-fidelity's defaults


def subset_size(num_fake: int, num_real: int) -> int:
    return min(SUBSET_SIZE, num_fake, num_real)


def compute(fake: Features, real: Features) -> dict[str, float]:
    # torch-fidelity's convention: input 1 is generated, input 2 is real.
    a, b = fake.rows["pool"], real.rows["pool"]
    out = kid_features_to_metric(a, b, kid_subsets=SUBSETS, kid_subset_size=subset_size(len(a), len(b)),
                                 kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                 kid_kernel_poly_coef0=1, rng_seed=SEED, verbose=False)
    return {"kid": out[KEY_METRIC_KID_MEAN], "kid_std": out[KEY_METRIC_KID_STD]}
