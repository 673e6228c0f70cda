"""multi_label: encoding, predictions, metrics and their bootstrap, each label on its known (non-NaN) rows."""

import numpy as np
import pytest
from heads_support import informative, with_unknowns
from sklearn.metrics import roc_auc_score

from vitune.tasks import compute_metrics
from vitune.tasks.bootstrap import resample_counts
from vitune.tasks.multi_label import MULTI_LABEL


def test_encoding_text_and_frequencies():
    names = ["a", "b", "c"]
    assert MULTI_LABEL.encode("a|c", names, "|") == [1.0, 0.0, 1.0]
    assert MULTI_LABEL.label_text([1.0, 0.0, 1.0], names) == "a, c"
    assert MULTI_LABEL.label_text([0.0, 0.0, 0.0], names) == "none"
    assert MULTI_LABEL.output_names(names) == names


def test_prediction_row():
    names = ["a", "b"]
    row = MULTI_LABEL.prediction_row("x.png", np.array([0.7, 0.2]), names, [0.5, 0.1])
    assert row == {"file": "x.png", "a": 0.7, "b": 0.2, "predicted": "a|b"}


def test_classification_has_no_label_range():
    assert MULTI_LABEL.label_range(np.array([1.0])) is None


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


def test_per_label_metrics_are_computed_on_the_known_rows():
    x, y = informative("multi_label", 200)
    scores = 1 / (1 + np.exp(-x[:, :3]))
    y_unknown = with_unknowns(y)
    result = compute_metrics("multi_label", y_unknown, scores, ["a", "b", "c"])
    for j, name in enumerate("abc"):
        known = ~np.isnan(y_unknown[:, j])
        assert result.per_label[name]["roc_auc"] == pytest.approx(roc_auc_score(y[known, j], scores[known, j]))
        assert result.per_label[name]["support"] == known.sum() and result.per_label[name]["unknown"] == (~known).sum()
    assert result.metrics["roc_auc_macro"] == pytest.approx(np.mean([result.per_label[n]["roc_auc"] for n in "abc"]))


def test_bootstrap_resamples_score_each_label_on_its_known_rows():
    x, y = informative("multi_label", 120)
    scores = 1 / (1 + np.exp(-x[:, :3]))
    y_unknown = with_unknowns(y)
    result = MULTI_LABEL.bootstrap_intervals(y_unknown, scores, ["a", "b", "c"], n_bootstrap=200, seed=3)
    known = ~np.isnan(y_unknown[:, 1])
    manual = []
    for counts in resample_counts(len(y), 200, 3):
        for row in counts:
            weights, target = row[known], y[known, 1]
            if weights[target > 0.5].sum() and weights[target <= 0.5].sum():
                manual.append(roc_auc_score(target, scores[known, 1], sample_weight=weights))
    assert result["per_label"]["b"] == pytest.approx(np.percentile(manual, [2.5, 97.5]).tolist(), abs=1e-9)
    low, high = result["metrics"]["roc_auc_macro"]
    assert low < compute_metrics("multi_label", y_unknown, scores, list("abc")).metrics["roc_auc_macro"] < high


def test_bootstrap_with_no_scorable_label_gives_no_interval():
    y = np.zeros((20, 2))  # no positives anywhere: no AUC, no F1 to resample
    result = MULTI_LABEL.bootstrap_intervals(y, np.random.default_rng(0).random((20, 2)), ["a", "b"],
                                 n_bootstrap=50, seed=0)
    assert result["metrics"]["roc_auc_macro"] is None and result["metrics"]["f1_macro"] is None
    assert result["per_label"] == {"a": None, "b": None}
