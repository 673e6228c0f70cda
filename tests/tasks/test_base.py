"""The Task interface's shared behaviour: the main metric's direction."""

from vitune.tasks import MULTI_LABEL, REGRESSION, SINGLE_LABEL, get_task


def test_metric_direction():
    assert MULTI_LABEL.is_better(0.9, 0.8) and not MULTI_LABEL.is_better(0.7, 0.8)
    assert REGRESSION.is_better(1.0, 2.0) and not REGRESSION.is_better(2.0, 1.0)
    assert SINGLE_LABEL.is_better(0.1, None) and not SINGLE_LABEL.is_better(None, 0.1)


def test_is_better_respects_direction():
    assert get_task("multi_label").is_better(0.9, 0.8)
    assert not get_task("regression").is_better(2.0, 1.0)
    assert get_task("regression").is_better(1.0, None)
    assert not get_task("single_label").is_better(None, 0.1)
