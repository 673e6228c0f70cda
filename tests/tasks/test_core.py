"""Task objects: one home for everything that differs by task."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vitune.errors import UserError
from vitune.models.run import task_of_config
from vitune.tasks.core import MULTI_LABEL, REGRESSION, SINGLE_LABEL, TASK_NAMES, get_task, unscale_target


def test_target_scaling_round_trip():
    values = np.array([10.0, 55.0, 100.0])
    scaled = REGRESSION.batch_labels(list(values), (10.0, 100.0))
    assert scaled.dtype == torch.float32 and scaled.tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert REGRESSION.targets_from_batches(scaled.numpy(), (10.0, 100.0)).tolist() == pytest.approx(values.tolist())
    assert unscale_target(np.array([0.5]), None).tolist() == [0.5]


def test_task_of_problem_type():
    assert task_of_config(SimpleNamespace(problem_type="multi_label_classification")).name == "multi_label"
    assert task_of_config(SimpleNamespace(problem_type="regression")).name == "regression"
    assert task_of_config(SimpleNamespace(problem_type=None)) is SINGLE_LABEL


def test_names_problem_types_and_main_metrics():
    assert TASK_NAMES == ("single_label", "multi_label", "regression")
    assert [get_task(n).problem_type for n in TASK_NAMES] == [
        "single_label_classification", "multi_label_classification", "regression"]
    assert [get_task(n).main_metric for n in TASK_NAMES] == ["accuracy", "roc_auc_macro", "rmse"]
    assert get_task(MULTI_LABEL) is MULTI_LABEL
    with pytest.raises(UserError, match="unknown task 'binary': use one of single_label, multi_label, regression"):
        get_task("binary")


def test_metric_direction():
    assert MULTI_LABEL.is_better(0.9, 0.8) and not MULTI_LABEL.is_better(0.7, 0.8)
    assert REGRESSION.is_better(1.0, 2.0) and not REGRESSION.is_better(2.0, 1.0)
    assert SINGLE_LABEL.is_better(0.1, None) and not SINGLE_LABEL.is_better(None, 0.1)


def test_batch_labels_and_losses():
    multi = MULTI_LABEL.batch_labels([[1.0, 0.0], [0.0, 1.0]])
    assert multi.dtype == torch.float32 and multi.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    single = SINGLE_LABEL.batch_labels([2, 0])
    assert single.dtype == torch.long and single.tolist() == [2, 0]
    scaled = REGRESSION.batch_labels([10.0, 20.0], (10.0, 30.0))
    assert scaled.tolist() == pytest.approx([0.0, 0.5])
    logits = torch.zeros(2, 2)
    assert MULTI_LABEL.loss(logits, multi).item() == pytest.approx(np.log(2))
    assert SINGLE_LABEL.loss(torch.zeros(2, 3), single).item() == pytest.approx(np.log(3))
    assert REGRESSION.loss(torch.zeros(2, 1), scaled).item() == pytest.approx(0.125)
    assert REGRESSION.loss(torch.zeros(2, 1), scaled, "bce").item() == pytest.approx(np.log(2))


def test_encoding_text_and_frequencies():
    names = ["a", "b", "c"]
    assert MULTI_LABEL.encode("a|c", names, "|") == [1.0, 0.0, 1.0]
    assert SINGLE_LABEL.encode("b", names, None) == 1
    assert REGRESSION.encode("3.5", ["score"], None) == 3.5
    assert MULTI_LABEL.label_text([1.0, 0.0, 1.0], names) == "a, c"
    assert MULTI_LABEL.label_text([0.0, 0.0, 0.0], names) == "none"
    assert SINGLE_LABEL.label_text(2, names) == "c"
    assert SINGLE_LABEL.frequencies(np.array([0, 2, 2]), names) == {"a": 1, "b": 0, "c": 2}
    assert REGRESSION.frequencies(np.array([1.0, 3.0]), ["score"]) == {"n": 2, "mean": 2.0, "min": 1.0, "max": 3.0}
    assert REGRESSION.output_names(["price"]) == ["score"] and MULTI_LABEL.output_names(names) == names


def test_prediction_rows_per_task():
    names = ["a", "b"]
    row = MULTI_LABEL.prediction_row("x.png", np.array([0.7, 0.2]), names, [0.5, 0.1])
    assert row == {"file": "x.png", "a": 0.7, "b": 0.2, "predicted": "a|b"}
    row = SINGLE_LABEL.prediction_row("x.png", np.array([0.3, 0.7]), names, None)
    assert row == {"file": "x.png", "a": 0.3, "b": 0.7, "predicted": "b", "probability": 0.7}
    assert REGRESSION.prediction_row("x.png", np.float64(4.5), ["score"], None) == {"file": "x.png", "predicted": 4.5}
    assert SINGLE_LABEL.prediction_columns(names) == ["file", "a", "b", "predicted", "probability"]
    assert REGRESSION.prediction_columns(["score"]) == ["file", "predicted"]


def test_constant_regression_target_is_a_user_error():
    assert REGRESSION.label_range(np.array([1.0, 5.0])) == (1.0, 5.0)
    assert MULTI_LABEL.label_range(np.array([1.0])) is None
    with pytest.raises(UserError, match="constant"):
        REGRESSION.label_range(np.array([2.0, 2.0]))
