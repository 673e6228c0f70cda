"""The ensemble head: the weighted mean of member heads' scores, as in the cuML article (MLP + SVM)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from vitune.heads.base import Head
from vitune.tasks import SINGLE_LABEL


class EnsembleHead(Head):
    """Weighted mean of member heads' scores (probabilities / target units), equal weights by default."""

    def __init__(self, estimators: Sequence[tuple[str, Head]] = (), weights: Sequence[float] | None = None,
                 prefit: bool = False):
        self._keep_params(locals())

    @property
    def task(self) -> str:
        """The members' task."""
        return self.estimators[0][1].task if self.estimators else SINGLE_LABEL.name

    def _checked_weights(self) -> np.ndarray:
        if not self.estimators:
            raise ValueError("an ensemble needs at least one member")
        if len({est.task for _, est in self.estimators}) != 1:
            raise ValueError("ensemble members must share one task")
        weights = np.ones(len(self.estimators)) if self.weights is None else np.asarray(self.weights, float)
        if weights.shape != (len(self.estimators),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("weights must be one non-negative number per member, not all zero")
        return weights / weights.sum()

    def fit(self, X, y) -> "EnsembleHead":
        """Fit clones of the members, or check them when ``prefit``."""
        self.weights_ = self._checked_weights()
        if self.prefit:
            for _, est in self.estimators:
                check_is_fitted(est, "n_outputs_")
            self.estimators_ = [est for _, est in self.estimators]
        else:
            self.estimators_ = [clone(est).fit(X, y) for _, est in self.estimators]
        first = self.estimators_[0]
        self.n_features_in_, self.n_outputs_ = first.n_features_in_, first.n_outputs_
        self.backend_ = "+".join(est.backend_ for est in self.estimators_)
        return self

    def predict_scores(self, X, logits: np.ndarray | None = None) -> np.ndarray:
        """Weighted mean of the members' ``predict_scores``."""
        check_is_fitted(self, "estimators_")
        return sum(w * est.predict_scores(X, logits) for w, est in zip(self.weights_, self.estimators_))
