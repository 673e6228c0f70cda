"""Task metrics with per-label values, shared by training, heads and evaluation.

Keys follow the spec: multi_label ``roc_auc_macro``, ``average_precision_macro``, ``f1_macro``;
single_label ``accuracy``, ``f1_macro``, ``roc_auc_ovr``; regression ``rmse``, ``mae``, ``r2``.
A label whose evaluated split holds a single class has AUC ``None`` (JSON ``null``) and is left
out of the macro mean, instead of silently counting as 0.5 or crashing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from vitune.tasks.core import Task, get_task


@dataclass
class MetricsResult:
    """Aggregate metrics and per-label values (label name -> metric -> value or None)."""

    metrics: dict[str, float | None]
    per_label: dict[str, dict[str, float | int | None]] = field(default_factory=dict)


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _mean_of_known(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _binary_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, score))


def _binary_ap(y: np.ndarray, score: np.ndarray) -> float | None:
    if y.sum() == 0:
        return None
    return float(average_precision_score(y, score))


def multi_label_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    thresholds: np.ndarray | float = 0.5,
) -> MetricsResult:
    """AUC-ROC, average precision and F1 per label and macro-averaged over labels with both classes.

    Each label is scored on its known rows: an unknown target (NaN: missing, or uncertain under
    ``--uncertain ignore``) leaves that image out of that label only; ``unknown`` counts them.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(labels),))
    preds = (probs >= thresholds).astype(int)
    per_label: dict[str, dict] = {}
    for j, name in enumerate(labels):
        known = ~np.isnan(y_true[:, j])
        y, p = y_true[known, j], probs[known, j]
        auc = _binary_auc(y, p)
        per_label[name] = {
            "roc_auc": auc,
            "average_precision": _binary_ap(y, p),
            "f1": float(f1_score(y, preds[known, j], zero_division=0)) if auc is not None else None,
            "threshold": float(thresholds[j]),
            "positives": int(y.sum()),
            "support": int(len(y)),
            "unknown": int(len(known) - known.sum()),
        }
    metrics = {
        "roc_auc_macro": _mean_of_known([v["roc_auc"] for v in per_label.values()]),
        "average_precision_macro": _mean_of_known([v["average_precision"] for v in per_label.values()]),
        "f1_macro": _mean_of_known([v["f1"] for v in per_label.values()]),
    }
    return MetricsResult(metrics, per_label)


def single_label_metrics(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> MetricsResult:
    """Accuracy, macro F1 and one-vs-rest AUC (macro over classes present in the split)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    preds = probs.argmax(axis=1)
    class_ids = list(range(len(labels)))
    f1s = f1_score(y_true, preds, labels=class_ids, average=None, zero_division=0)
    per_label = {}
    for k, name in enumerate(labels):
        is_k = (y_true == k).astype(int)
        per_label[name] = {
            "roc_auc": _binary_auc(is_k, probs[:, k]),
            "f1": float(f1s[k]),
            "support": int(is_k.sum()),
        }
    present = [k for k in class_ids if (y_true == k).any()]
    metrics = {
        "accuracy": float(accuracy_score(y_true, preds)),
        "f1_macro": float(np.mean([f1s[k] for k in present])) if present else None,
        "roc_auc_ovr": _mean_of_known([per_label[labels[k]]["roc_auc"] for k in present]),
    }
    return MetricsResult(metrics, per_label)


def regression_metrics(y_true: np.ndarray, preds: np.ndarray) -> MetricsResult:
    """RMSE, MAE and R^2 in the target's own units."""
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    r2 = r2_score(y_true, preds) if len(y_true) > 1 and np.var(y_true) > 0 else float("nan")
    metrics = {
        "rmse": float(math.sqrt(mean_squared_error(y_true, preds))),
        "mae": float(mean_absolute_error(y_true, preds)),
        "r2": _nan_to_none(r2),
    }
    return MetricsResult(metrics)


def compute_metrics(
    task: str | Task,
    y_true: np.ndarray,
    scores: np.ndarray,
    labels: list[str],
    thresholds: np.ndarray | float = 0.5,
) -> MetricsResult:
    """Metrics for ``task`` from targets and scores.

    ``scores`` are probabilities for classification (sigmoid per label for multi_label, softmax
    over classes for single_label) and predictions in target units for regression.
    """
    return get_task(task).metrics(y_true, scores, labels, thresholds)
