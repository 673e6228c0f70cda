"""regression: the [0, 1] target scaling, encoding, predictions, metrics and their bootstrap."""

import numpy as np
import pytest
import torch

from vitune.errors import UserError
from vitune.tasks import compute_metrics
from vitune.tasks.regression import REGRESSION, unscale_target


def test_target_scaling_round_trip():
    values = np.array([10.0, 55.0, 100.0])
    scaled = REGRESSION.batch_labels(list(values), (10.0, 100.0))
    assert scaled.dtype == torch.float32 and scaled.tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert REGRESSION.targets_from_batches(scaled.numpy(), (10.0, 100.0)).tolist() == pytest.approx(values.tolist())
    assert unscale_target(np.array([0.5]), None).tolist() == [0.5]


def test_encoding_text_and_frequencies():
    assert REGRESSION.encode("3.5", ["score"], None) == 3.5
    assert REGRESSION.frequencies(np.array([1.0, 3.0]), ["score"]) == {"n": 2, "mean": 2.0, "min": 1.0, "max": 3.0}
    assert REGRESSION.output_names(["price"]) == ["score"]


def test_prediction_row_and_columns():
    assert REGRESSION.prediction_row("x.png", np.float64(4.5), ["score"], None) == {"file": "x.png", "predicted": 4.5}
    assert REGRESSION.prediction_columns(["score"]) == ["file", "predicted"]


def test_constant_regression_target_is_a_user_error():
    assert REGRESSION.label_range(np.array([1.0, 5.0])) == (1.0, 5.0)
    with pytest.raises(UserError, match="constant"):
        REGRESSION.label_range(np.array([2.0, 2.0]))


def test_regression_metrics():
    result = compute_metrics("regression", np.array([0.0, 10.0, 20.0]), np.array([0.0, 10.0, 23.0]), ["score"])
    assert result.metrics["rmse"] == pytest.approx(np.sqrt(3.0))
    assert result.metrics["mae"] == pytest.approx(1.0)
    assert result.metrics["r2"] == pytest.approx(1 - 9 / 200)


def test_bootstrap_intervals_regression_contain_estimate():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    preds = y + rng.normal(scale=0.5, size=200)
    result = REGRESSION.bootstrap_intervals(y, preds, ["score"], n_bootstrap=300, seed=0)
    point = compute_metrics("regression", y, preds, ["score"]).metrics
    for key in ("rmse", "mae", "r2"):
        low, high = result["metrics"][key]
        assert low < point[key] < high
