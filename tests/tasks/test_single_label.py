"""single_label: encoding, predictions and metrics."""

import numpy as np
import pytest

from vitune.tasks import compute_metrics
from vitune.tasks.single_label import SINGLE_LABEL


def test_encoding_text_and_frequencies():
    names = ["a", "b", "c"]
    assert SINGLE_LABEL.encode("b", names, None) == 1
    assert SINGLE_LABEL.label_text(2, names) == "c"
    assert SINGLE_LABEL.frequencies(np.array([0, 2, 2]), names) == {"a": 1, "b": 0, "c": 2}


def test_prediction_row_and_columns():
    names = ["a", "b"]
    row = SINGLE_LABEL.prediction_row("x.png", np.array([0.3, 0.7]), names, None)
    assert row == {"file": "x.png", "a": 0.3, "b": 0.7, "predicted": "b", "probability": 0.7}
    assert SINGLE_LABEL.prediction_columns(names) == ["file", "a", "b", "predicted", "probability"]


def test_single_label_metrics():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    result = compute_metrics("single_label", y, p, ["cat", "dog", "owl"])
    assert result.metrics["accuracy"] == pytest.approx(0.75)
    assert set(result.metrics) == {"accuracy", "f1_macro", "roc_auc_ovr"}
    assert result.per_label["owl"]["support"] == 2
