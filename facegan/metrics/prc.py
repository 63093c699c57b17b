"""Precision and recall (Kynkaanniemi et al. 2019): fidelity and diversity apart. Precision is
the share of generated images inside the real manifold (a ball around each real image reaching
its 3rd nearest real neighbour), recall the share of real images inside the generated manifold.
VGG16 fc2 features, as the paper and torch-fidelity use; torch-fidelity's
`prc_features_to_metric` (neighbourhood 3)."""

from __future__ import annotations

from torch_fidelity.metric_prc import (
    KEY_METRIC_F_SCORE,
    KEY_METRIC_PRECISION,
    KEY_METRIC_RECALL,
    prc_features_to_metric,
)

from facegan.metrics.features import Features, Needs

NEEDS = Needs(rows=frozenset({"vgg16"}))
REAL_NEEDS = Needs(rows=frozenset({"vgg16"}))
NEIGHBOURHOOD, BATCH = 3, 10000  # torch-fidelity's defaults


def precision_recall(fake, real) -> dict[str, float]:
    """torch-fidelity's precision, recall and F-score of generated rows against real rows."""
    # torch-fidelity's convention: input 1 is generated, input 2 is real.
    out = prc_features_to_metric(fake, real, prc_neighborhood=NEIGHBOURHOOD, prc_batch_size=BATCH,
                                 save_cpu_ram=False, verbose=False)
    return {"precision": out[KEY_METRIC_PRECISION], "recall": out[KEY_METRIC_RECALL],
            "pr_f_score": out[KEY_METRIC_F_SCORE]}


def compute(fake: Features, real: Features) -> dict[str, float]:
    return precision_recall(fake.rows["vgg16"], real.rows["vgg16"])
