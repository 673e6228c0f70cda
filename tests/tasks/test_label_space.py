"""Label spaces: task detection, label order, encoding and every bad-label reason."""

from __future__ import annotations

import pytest

from vitune.errors import UserError
from vitune.tasks.label_space import LabelSpace, detect_task, infer_label_space
from vitune.tasks.labels import BadLabel


def records(*raws) -> list:
    """The raw labels of a source's records, as the readers give them."""
    return list(raws)


@pytest.mark.parametrize(
    "raws, task",
    [
        ([["a"], "b", []], "multi_label"),
        (["cat", "dog"], "single_label"),
        ([1, 2, 2], "regression"),  # JSON numbers are scores
        (["0.5", "1.25"], "regression"),  # a fraction
        ([str(i) for i in range(21)], "regression"),  # many distinct values
        ([str(i % 10) for i in range(50)], "single_label"),  # digit class folders
        ([str(i / 10) for i in range(19)] + ["n/a"], "regression"),  # a stray non-number is a bad row
        (["1.5", "x", "y"], "single_label"),
    ],
)
def test_detect_task(raws, task):
    assert detect_task(raws) == task


def test_single_label_sorted_and_encoded():
    space = infer_label_space(records("dog", "cat", None, "cat", ""))
    assert (space.task, space.labels, space.label_range) == ("single_label", ["cat", "dog"], None)
    assert [space.encode("cat"), space.encode(" dog "), space.encode(["dog"])] == [0, 1, 1]
    for raw, reason in [(None, "missing label"), ("  ", "missing label"), ([], "missing label"),
                        ("cow", "unknown label 'cow'"), (["cat", "dog"], "2 labels for a single-label task"),
                        ({"a": 1}, "malformed label {'a': 1}"), (True, "malformed label True")]:
        with pytest.raises(BadLabel) as caught:
            space.encode(raw)
        assert caught.value.reason == reason


def test_numeric_class_names_sort_numerically():
    space = infer_label_space(records(*[str(i) for i in (10, 2, 1, 2)]), task="single_label")
    assert space.labels == ["1", "2", "10"]
    assert space.encode(2) == 1 and space.encode(10.0) == 2


def test_multi_label_from_lists_and_forced_strings():
    space = infer_label_space(records(["b", "a"], [], ["c"]))
    assert (space.task, space.labels) == ("multi_label", ["a", "b", "c"])
    assert space.encode(["b", "a"]) == [1.0, 1.0, 0.0]
    assert space.encode([]) == [0.0, 0.0, 0.0]
    forced = infer_label_space(records("x|y", "y"), task="multi_label")
    assert forced.labels == ["x", "y"] and forced.encode("x|y") == [1.0, 1.0]
    with pytest.raises(BadLabel, match="unknown label 'z'"):
        forced.encode(["x", "z"])


def test_label_order_is_fixed_even_when_some_are_absent():
    order = ["Atelectasis", "Cardiomegaly", "Effusion"]
    space = infer_label_space(records(["Effusion"], []), task="multi_label", label_order=order)
    assert space.labels == order
    assert space.encode(["Effusion"]) == [0.0, 0.0, 1.0]


def test_regression_range_name_and_bad_scores():
    space = infer_label_space(records(0.5, 2, "1.5", "oops"), task="regression", label_name="age")
    assert (space.task, space.labels, space.label_range) == ("regression", ["age"], (0.5, 2.0))
    assert space.encode("1.5") == 1.5 and space.encode(2) == 2.0
    for raw, reason in [("oops", "non-numeric score 'oops'"), ("inf", "non-finite score 'inf'"),
                        (["1"], "non-numeric score ['1']"), (float("nan"), "missing label")]:
        with pytest.raises(BadLabel) as caught:
            space.encode(raw)
        assert caught.value.reason == reason
    assert infer_label_space(records(1.0, 3.0)).labels == ["score"]


def test_unusable_label_sets_are_user_errors():
    with pytest.raises(UserError, match="no record has a label"):
        infer_label_space(records(None, ""))
    with pytest.raises(UserError, match="only one class"):
        infer_label_space(records("cat", "cat"))
    with pytest.raises(UserError, match="needs numeric labels"):
        infer_label_space(records("a", "b"), task="regression")
    with pytest.raises(UserError, match="unknown --task"):
        infer_label_space(records("a", "b"), task="ranking")
    with pytest.raises(UserError, match="duplicate label names: a"):
        LabelSpace("single_label", ["a", "a"])
