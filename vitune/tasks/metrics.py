"""What the tasks' metrics share: the result type, the binary AUC and the macro mean over known values.

Each task computes its own metrics (:meth:`vitune.tasks.base.Task.metrics`). Keys follow the spec:
multi_label ``roc_auc_macro``, ``average_precision_macro``, ``f1_macro``; single_label ``accuracy``,
``f1_macro``, ``roc_auc_ovr``; regression ``rmse``, ``mae``, ``r2``. A label whose evaluated split
holds a single class has AUC ``None`` (JSON ``null``) and is left out of the macro mean, instead of
silently counting as 0.5 or crashing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class MetricsResult:
    """Aggregate metrics and per-label values (label name -> metric -> value or None)."""

    metrics: dict[str, float | None]
    per_label: dict[str, dict[str, float | int | None]] = field(default_factory=dict)


def mean_of_known(values: list[float | None]) -> float | None:
    """The mean of the values that are not None; None when there is none."""
    known = [value for value in values if value is not None]
    if not known:
        return None
    return float(np.mean(known))


def binary_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """AUC-ROC of binary targets ``y`` against ``score``; None when ``y`` holds a single class."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, score))
