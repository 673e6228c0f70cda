"""``regression``: one number per image, learnt scaled to [0, 1] with the training range; RMSE."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vitune.errors import UserError
from vitune.tasks.base import Task
from vitune.tasks.bootstrap import Replicates
from vitune.tasks.labels import to_score
from vitune.tasks.losses import scaled_regression_loss
from vitune.tasks.metrics import MetricsResult

REGRESSION_OUTPUT = "score"  # the name of a regression model's one output
STRATA_BINS = 10  # quantile bins that stratified splitting balances


def unscale_target(values: np.ndarray, label_range: Sequence[float] | None) -> np.ndarray:
    """[0, 1] -> the target's own units, with the training split's (min, max)."""
    low, high = label_range or (0.0, 1.0)
    return np.asarray(values, dtype=np.float64) * (high - low) + low


class Regression(Task):
    """One number per image: the model learns it scaled to [0, 1] with the training range; RMSE."""

    name = "regression"
    problem_type = "regression"
    main_metric = "rmse"
    metric_keys = ("rmse", "mae", "r2")
    greater_is_better = False
    is_classification = False
    label_dtype = "float32"
    default_split = "random"

    def output_names(self, labels):
        return [REGRESSION_OUTPUT]

    def encode(self, raw, names, separator):
        return to_score(raw)

    def strata(self, labels):
        values = np.asarray(labels, dtype=np.float64)
        edges = np.unique(np.quantile(values, np.linspace(0, 1, STRATA_BINS + 1)[1:-1]))
        return np.eye(len(edges) + 1)[np.searchsorted(edges, values, side="right")]

    def label_text(self, value, labels):
        return f"{float(value):.4g}"

    def frequencies(self, values, labels):
        if not len(values):
            return {"n": 0}
        return {"n": len(values), "mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}

    def label_range(self, values):
        values = np.asarray(values, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if high <= low:
            raise UserError(f"the training target is constant ({low}): regression needs at least two distinct values")
        return low, high

    def batch_labels(self, values, label_range=None):
        import torch

        low, high = label_range  # the model learns the target scaled to [0, 1]
        scaled = (np.asarray(values, dtype=np.float32).reshape(-1) - low) / max(high - low, 1e-12)
        return torch.from_numpy(scaled)

    def loss(self, logits, labels, regression_loss="mse", pos_weight=None, multi_label_loss=None):
        return scaled_regression_loss(logits, labels, regression_loss)

    def scores(self, logits, config=None):
        from scipy.special import expit

        predictions = np.asarray(logits, dtype=np.float64).reshape(-1)
        if getattr(config, "vitune_regression_loss", "mse") == "bce":
            predictions = expit(predictions)
        return unscale_target(predictions, getattr(config, "vitune_label_range", None))

    def targets_from_batches(self, label_ids, label_range):
        return unscale_target(label_ids, label_range)

    def metrics(self, y_true, scores, labels, thresholds=0.5):
        """RMSE, MAE and R^2 in the target's own units (R^2 None when the targets are constant)."""
        from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

        y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
        predictions = np.asarray(scores, dtype=np.float64).reshape(-1)
        r2 = None
        if len(y_true) > 1 and np.var(y_true) > 0:
            r2 = float(r2_score(y_true, predictions))
        metrics = {
            "rmse": float(math.sqrt(mean_squared_error(y_true, predictions))),
            "mae": float(mean_absolute_error(y_true, predictions)),
            "r2": r2,
        }
        return MetricsResult(metrics)

    def bootstrap_replicates(self, y_true, scores, labels, point, counts, thresholds):
        """``rmse``, ``mae`` and ``r2`` under each resample (R^2 NaN where the drawn targets are constant)."""
        y = np.asarray(y_true, dtype=np.float64)
        predictions = np.asarray(scores, dtype=np.float64).reshape(-1)
        n = counts.sum(axis=1)  # len(y) for the whole split; a subgroup's columns draw fewer or more
        residual = counts @ (y - predictions) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            total = counts @ y**2 - (counts @ y) ** 2 / n
            r2 = np.where(total > 0, 1 - residual / total, np.nan)
            return Replicates({"rmse": np.sqrt(residual / n), "mae": counts @ np.abs(y - predictions) / n, "r2": r2})

    def indicator(self, y, n_outputs):
        raise ValueError("regression targets have no 0/1 indicator")

    def check_targets(self, y, n_classes=None):
        return np.asarray(y, dtype=np.float64), 1

    def hard_predictions(self, scores, thresholds=0.5):
        return scores

    def logreg_estimator(self, C, max_iter):
        from sklearn.linear_model import Ridge

        return Ridge(alpha=1.0 / (2.0 * C))

    def prediction_columns(self, labels):
        return ["file", "predicted"]

    def prediction_row(self, file, scores, labels, thresholds):
        return {"file": file, "predicted": float(scores)}


REGRESSION = Regression()
