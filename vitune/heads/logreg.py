"""The logistic-regression head: the task's scikit-learn linear model on standardised embeddings.

multi_label: one ``LogisticRegression`` per label on its known rows; single_label:
multinomial ``LogisticRegression``; regression: ``Ridge`` (see
:meth:`vitune.tasks.base.Task.logreg_estimator`). The fitted model is kept as one linear map
(``coef_``, ``intercept_``) so it is stored without pickle and predicts with numpy.
"""

from __future__ import annotations

import numpy as np
from joblib import Parallel, delayed, parallel_config
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from vitune.heads.base import Head

ABSENT_CLASS_LOGIT = -50.0  # a class never seen in training: probability ~0


def prior_logit(y: np.ndarray) -> float:
    """The smoothed log-odds of a 0/1 column: what a label with one class in training predicts."""
    p = (np.sum(y) + 1.0) / (len(y) + 2.0)
    return float(np.log(p / (1.0 - p)))


def fit_per_label(estimator: LogisticRegression, xs: np.ndarray, y: np.ndarray,
                  n_jobs: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """``(coef [L, D], intercept [L], iterations)`` of one clone of ``estimator`` per label.

    What ``OneVsRestClassifier`` does, except that each label is fitted on the rows where it is
    known (unknown multi-label targets are NaN). A label with one class there has no model; it gets
    no slope and the smoothed prior.
    """

    def fit_one(j: int):
        known = ~np.isnan(y[:, j])
        if len(np.unique(y[known, j])) < 2:
            return None, prior_logit(y[known, j])
        return clone(estimator).fit(xs[known], y[known, j]), None

    with parallel_config(backend="threading"):
        fitted = Parallel(n_jobs=n_jobs)(delayed(fit_one)(j) for j in range(y.shape[1]))
    coef, intercept, iterations = np.zeros((y.shape[1], xs.shape[1])), np.zeros(y.shape[1]), 1
    for j, (model, prior) in enumerate(fitted):
        if model is None:
            intercept[j] = prior
            continue
        coef[j], intercept[j] = model.coef_[0], model.intercept_[0]
        iterations = max(iterations, int(model.n_iter_.max()))
    return coef, intercept, iterations


def multinomial_parameters(model: LogisticRegression, n_outputs: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(coef [K, D], intercept [K], iterations)`` over all K classes, absent ones at ~0 probability."""
    coef = np.zeros((n_outputs, model.n_features_in_))
    intercept = np.full(n_outputs, ABSENT_CLASS_LOGIT)
    present = model.classes_.astype(np.int64)
    fitted_coef, fitted_intercept = model.coef_, model.intercept_
    if len(present) == 2:  # binary: softmax([-z/2, z/2]) == sigmoid(z)
        fitted_coef = np.vstack([-fitted_coef / 2, fitted_coef / 2])
        fitted_intercept = np.array([-fitted_intercept[0] / 2, fitted_intercept[0] / 2])
    coef[present], intercept[present] = fitted_coef, fitted_intercept
    return coef, intercept, int(model.n_iter_.max())


class LogRegHead(Head):
    """Logistic regression on standardised embeddings (per label / multinomial), Ridge for regression."""

    _array_state = ("coef_", "intercept_")

    def __init__(self, task: str = "multi_label", C: float = 1.0, max_iter: int = 1000,
                 n_classes: int | None = None, n_jobs: int | None = -1):
        self._keep_params(locals())

    def fit(self, X, y) -> "LogRegHead":
        """Fit the task's linear model on standardised embeddings and keep it as ``coef_``, ``intercept_``."""
        X, y = self._validate_fit(X, y)
        self.backend_ = "sklearn"
        xs = self._fit_scaler(X)
        model = self._task.logreg_estimator(self.C, self.max_iter)
        if self._task.multi_output:
            self.coef_, self.intercept_, self.n_iter_ = fit_per_label(model, xs, y, self.n_jobs)
            return self
        if isinstance(model, LogisticRegression) and len(np.unique(y)) == 1:  # LogisticRegression refuses it
            self._fit_one_class(int(y[0]), xs.shape[1])
            return self
        model.fit(xs, y)
        self.coef_, self.intercept_, self.n_iter_ = self._linear_parameters(model)
        return self

    def _fit_one_class(self, present: int, dim: int) -> None:
        """Training with a single class: that class gets every image."""
        self.coef_ = np.zeros((self.n_outputs_, dim))
        self.intercept_ = np.full(self.n_outputs_, ABSENT_CLASS_LOGIT)
        self.intercept_[present] = 0.0
        self.n_iter_ = 1

    def _linear_parameters(self, model) -> tuple[np.ndarray, np.ndarray, int]:
        if isinstance(model, LogisticRegression):
            return multinomial_parameters(model, self.n_outputs_)
        return np.atleast_2d(model.coef_), np.atleast_1d(model.intercept_), 1  # Ridge: closed form

    def _decision(self, X) -> np.ndarray:
        """Linear decision values ``[N, outputs]``."""
        X = self._validate_predict(X)
        return self.scaler_.transform(X) @ self.coef_.T + self.intercept_
