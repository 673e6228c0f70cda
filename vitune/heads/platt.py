"""Platt scaling: decision values -> calibrated probabilities, one sigmoid per output."""

from __future__ import annotations

import numpy as np
from scipy.special import expit as sigmoid


def fit_sigmoid(decisions: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Platt scaling per column: ``a, b`` with ``P(y=1) = sigmoid(a * d + b)``.

    Fitted on each column's known (non-NaN) targets, with Platt's smoothed targets, so a column with one class in training still gets finite,
    sensible values (the prior) instead of a diverging slope.
    """
    from scipy.optimize import minimize

    a = np.zeros(decisions.shape[1])
    b = np.zeros(decisions.shape[1])
    for j in range(decisions.shape[1]):
        known = ~np.isnan(targets[:, j])  # an unknown target (NaN) calibrates nothing
        d, y = decisions[known, j].astype(np.float64), targets[known, j] > 0
        n_pos, n_neg = y.sum(), (~y).sum()
        t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

        def loss(params, d=d, t=t):
            z = params[0] * d + params[1]
            p = sigmoid(z)
            value = np.sum(np.logaddexp(0.0, z) - t * z)
            return value, np.array([np.sum((p - t) * d), np.sum(p - t)])

        start = np.array([1.0, np.log((n_pos + 1.0) / (n_neg + 1.0))])
        a[j], b[j] = minimize(loss, start, jac=True, method="L-BFGS-B").x
    return a, b
