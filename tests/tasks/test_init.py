"""The task registry: names, problem types, main metrics, lookup by name and by model config."""

from types import SimpleNamespace

import pytest

from vitune.errors import UserError
from vitune.tasks import MULTI_LABEL, SINGLE_LABEL, TASK_NAMES, get_task, task_of_config


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
