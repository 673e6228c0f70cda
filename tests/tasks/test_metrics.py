"""Metric values against hand-computed cases, including the one-class (null AUC) rule."""

import numpy as np
import pytest

from vitune.tasks.core import get_task
from vitune.tasks.metrics import compute_metrics


def test_multi_label_auc_null_for_single_class_label_and_excluded_from_macro():
    y = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 0, 1]], dtype=float)
    p = np.array([[0.9, 0.2, 0.1], [0.2, 0.1, 0.8], [0.7, 0.3, 0.4], [0.4, 0.9, 0.6]])
    result = compute_metrics("multi_label", y, p, ["a", "b", "c"])
    assert result.per_label["a"]["roc_auc"] == 1.0
    assert result.per_label["b"]["roc_auc"] is None  # label b never positive
    assert result.per_label["c"]["roc_auc"] == 1.0
    assert result.metrics["roc_auc_macro"] == 1.0
    assert result.per_label["a"]["positives"] == 2


def test_multi_label_partial_auc_value():
    y = np.array([[1], [0], [1], [0]], dtype=float)
    p = np.array([[0.8], [0.9], [0.7], [0.1]])
    result = compute_metrics("multi_label", y, p, ["x"])
    assert result.metrics["roc_auc_macro"] == pytest.approx(0.5)  # pairs: (0.8>0.9 no,0.8>0.1 yes,0.7 no,0.7 yes)
    assert result.metrics["f1_macro"] == pytest.approx(0.8)  # 2 TP, 1 FP, 0 FN at 0.5


def test_single_label_metrics():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    result = compute_metrics("single_label", y, p, ["cat", "dog", "owl"])
    assert result.metrics["accuracy"] == pytest.approx(0.75)
    assert set(result.metrics) == {"accuracy", "f1_macro", "roc_auc_ovr"}
    assert result.per_label["owl"]["support"] == 2


def test_regression_metrics():
    result = compute_metrics("regression", np.array([0.0, 10.0, 20.0]), np.array([0.0, 10.0, 23.0]), ["score"])
    assert result.metrics["rmse"] == pytest.approx(np.sqrt(3.0))
    assert result.metrics["mae"] == pytest.approx(1.0)
    assert result.metrics["r2"] == pytest.approx(1 - 9 / 200)


def test_is_better_respects_direction():
    assert get_task("multi_label").is_better(0.9, 0.8)
    assert not get_task("regression").is_better(2.0, 1.0)
    assert get_task("regression").is_better(1.0, None)
    assert not get_task("single_label").is_better(None, 0.1)
