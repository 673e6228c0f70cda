"""Split assignment: groups never span splits, proportions hold, rare labels reach every split."""

from __future__ import annotations

import numpy as np
import pytest

from vitune.data.sources.base import Record
from vitune.data.splits import assign_splits
from vitune.errors import UserError


def _records(n: int, groups=None, splits=None) -> list[Record]:
    return [
        Record(file=f"{i}.png", raw_label=None, group=None if groups is None else groups[i],
               split=None if splits is None else splits[i])
        for i in range(n)
    ]


def _multi_label(n: int, rates, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, len(rates))) < np.asarray(rates)).astype(np.float32)


def test_random_split_proportions_and_seed_determinism():
    labels = list(np.random.default_rng(0).random(1000))
    first = assign_splits(_records(1000), labels, "regression", "random", 0.2, 0.1, seed=3)
    again = assign_splits(_records(1000), labels, "regression", "random", 0.2, 0.1, seed=3)
    other = assign_splits(_records(1000), labels, "regression", "random", 0.2, 0.1, seed=4)
    assert first.counts() == {"train": 700, "validation": 200, "test": 100}
    assert first.splits == again.splits
    assert first.splits != other.splits
    assert first.method == "random"


def test_stratified_single_label_keeps_class_shares():
    labels = [0] * 500 + [1] * 100 + [2] * 20
    result = assign_splits(_records(620), labels, "single_label", "stratified", 0.1, 0.1, seed=0)
    splits = np.array(result.splits)
    classes = np.array(labels)
    for cls, n in ((0, 500), (1, 100), (2, 20)):
        per_split = {s: int(((splits == s) & (classes == cls)).sum()) for s in ("train", "validation", "test")}
        assert per_split == {"train": round(0.8 * n), "validation": round(0.1 * n), "test": round(0.1 * n)}


def test_stratified_multi_label_puts_positives_of_every_label_in_every_split():
    y = _multi_label(600, [0.4, 0.1, 0.02, 0.01], seed=1)
    result = assign_splits(_records(600), list(y), "multi_label", "stratified", 0.1, 0.1, seed=0)
    splits = np.array(result.splits)
    counts = result.counts()
    assert abs(counts["validation"] - 60) <= 3 and abs(counts["test"] - 60) <= 3
    for split in ("train", "validation", "test"):
        positives = y[splits == split].sum(axis=0)
        assert (positives >= 1).all(), (split, positives)
    # the common label keeps its share within a few percent in each split
    for split in ("validation", "test"):
        assert abs(y[splits == split, 0].mean() - y[:, 0].mean()) < 0.05


def test_group_split_never_spans_splits_and_is_close_to_fractions():
    rng = np.random.default_rng(2)
    groups = [f"patient{g}" for g in rng.integers(0, 150, 900)]
    y = _multi_label(900, [0.3, 0.05], seed=2)
    result = assign_splits(_records(900, groups=groups), list(y), "multi_label", "auto", 0.15, 0.15, seed=5)
    assert result.method == "group"
    split_of: dict[str, set[str]] = {}
    for group, split in zip(groups, result.splits):
        split_of.setdefault(group, set()).add(split)
    assert all(len(s) == 1 for s in split_of.values())
    counts = result.counts()
    assert abs(counts["validation"] - 135) <= 15 and abs(counts["test"] - 135) <= 15


def test_official_split_keeps_test_and_carves_grouped_validation_from_train():
    groups = [f"p{i // 4}" for i in range(400)]
    source = ["test" if i >= 300 else "train" for i in range(400)]
    labels = list(_multi_label(400, [0.3], seed=3))
    result = assign_splits(_records(400, groups, source), labels, "multi_label", "auto", 0.2, 0.1, official=True)
    assert result.method == "official"
    assert result.splits[300:] == ["test"] * 100
    counts = result.counts()
    assert counts["test"] == 100 and abs(counts["validation"] - 60) <= 4
    carved = {g for g, s in zip(groups[:300], result.splits[:300]) if s == "validation"}
    assert all(s == "validation" for g, s in zip(groups, result.splits) if g in carved)


def test_source_split_folders_are_honoured_as_given():
    source = ["train"] * 8 + ["val"] * 2 + ["test"] * 2
    result = assign_splits(_records(12, splits=source), [0, 1] * 6, "single_label")
    assert result.method == "official"
    assert result.splits == ["train"] * 8 + ["validation"] * 2 + ["test"] * 2


def test_explicit_method_overrides_source_splits_and_auto_falls_back():
    source = ["train"] * 60
    result = assign_splits(_records(60, splits=source), [0, 1, 2] * 20, "single_label", "random", 0.2, 0.2)
    assert result.counts() == {"train": 36, "validation": 12, "test": 12}
    assert assign_splits(_records(30), [0, 1, 2] * 10, "single_label").method == "stratified"
    assert assign_splits(_records(30), [0.5] * 30, "regression").method == "random"


def test_zero_test_fraction_gives_no_test_split_and_small_data_still_has_validation():
    result = assign_splits(_records(5), [0, 1, 0, 1, 0], "single_label", "stratified", 0.1, 0.0)
    assert set(result.counts()) == {"train", "validation"}


def test_impossible_methods_are_user_errors():
    with pytest.raises(UserError, match="--group-column"):
        assign_splits(_records(10), [0] * 10, "single_label", "group")
    with pytest.raises(UserError, match="official"):
        assign_splits(_records(10), [0] * 10, "single_label", "official")
    with pytest.raises(UserError, match="unknown split"):
        assign_splits(_records(10), [0] * 10, "single_label", "kfold")


@pytest.mark.parametrize("method", ["random", "stratified"])
def test_every_method_keeps_a_group_in_one_split(method):
    rng = np.random.default_rng(7)
    groups = [f"s{g}" for g in rng.integers(0, 40, 200)]
    labels = list(rng.integers(0, 3, 200))
    result = assign_splits(_records(200, groups=groups), labels, "single_label", method, 0.2, 0.2, seed=1)
    assert result.method == method
    split_of: dict[str, set[str]] = {}
    for group, split in zip(groups, result.splits):
        split_of.setdefault(group, set()).add(split)
    assert all(len(s) == 1 for s in split_of.values())


def test_small_regression_set_keeps_the_requested_fractions():
    labels = list(np.linspace(0, 100, 30))
    result = assign_splits(_records(30), labels, "regression", "stratified", 0.1, 0.1, seed=0)
    assert result.counts() == {"train": 24, "validation": 3, "test": 3}
