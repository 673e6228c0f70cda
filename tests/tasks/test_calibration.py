"""ECE, Brier and temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest

from vitune.tasks import MULTI_LABEL, SINGLE_LABEL
from vitune.tasks.calibration import (
    apply_temperature,
    brier_score,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
)


def test_ece_of_a_calibrated_and_of_an_overconfident_predictor():
    rng = np.random.default_rng(0)
    probability = rng.random(200_000)
    outcome = (rng.random(200_000) < probability).astype(float)
    assert expected_calibration_error(outcome, probability) < 0.01
    assert expected_calibration_error(np.array([1, 0, 1, 0.0]), np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(0.5)


def test_temperature_undoes_overconfident_logits_per_label_and_masks_unknown_cells():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 1.5, (2000, 2))
    y = (rng.random((2000, 2)) < 1 / (1 + np.exp(-true_logits))).astype(float)
    y[:100, 1] = np.nan
    temperatures = fit_temperature(MULTI_LABEL, true_logits * np.array([3.0, 0.5]), y)
    assert temperatures == pytest.approx([3.0, 0.5], rel=0.15)
    scaled = apply_temperature(true_logits * 3.0, [3.0, 3.0])
    np.testing.assert_allclose(scaled, true_logits)


def test_single_label_gets_one_temperature_and_top_label_ece():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (3000, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in probs])
    assert fit_temperature(SINGLE_LABEL, logits * 2.0, y) == pytest.approx([2.0], rel=0.15)
    report = calibration_report(SINGLE_LABEL, y, probs, ["a", "b", "c"], ["a", "b", "c"])
    assert report["ece_macro"] < 0.04 and list(report["per_label"]) == ["top label"]
    onehot = np.eye(3)[y]
    assert brier_score(SINGLE_LABEL, y, probs, ["a", "b", "c"])["top label"] == pytest.approx(
        np.mean(((probs - onehot) ** 2).sum(axis=1)))
