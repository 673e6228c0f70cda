"""Bootstrap resampling by image: the weighted AUC of each resample, and resamples that lose a class."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vitune.tasks.bootstrap import resample_counts, weighted_auc


def test_weighted_auc_equals_sklearn_on_each_resample():
    rng = np.random.default_rng(3)
    y = (rng.random(60) < 0.4).astype(float)
    score = np.round(rng.random(60) + 0.4 * y, 1)  # rounded: many ties
    counts = next(resample_counts(60, 6, seed=1))
    for row, auc in zip(counts, weighted_auc(counts, y, score)):
        drawn = np.repeat(np.arange(60), row.astype(int))
        assert auc == pytest.approx(roc_auc_score(y[drawn], score[drawn]))


def test_resample_with_one_class_is_skipped():
    y = np.array([1.0] + [0.0] * 9)
    counts = np.ones((2, 10))
    counts[1] = [0] + [1] * 8 + [2]  # the only positive not drawn
    aucs = weighted_auc(counts, y, np.linspace(1, 0, 10))  # the positive scores highest
    assert aucs[0] == pytest.approx(1.0) and np.isnan(aucs[1])
