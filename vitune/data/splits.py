"""Assigning every kept record to ``train``, ``validation`` or ``test``.

Methods (``--split``):

- ``official``: the split the source itself gives (ChestX-ray14's ``test_list.txt``, split folders
  ``train/``, ``validation/``, ``test/``). A missing validation split is carved out of train
  (patient-grouped when there are groups); a missing test split stays missing unless the source
  has train only.
- ``random``: a seeded shuffle cut at the requested fractions.

Whatever the method, records that share a group (``--group-column``, ChestX-ray14's Patient ID)
stay in one split.
- ``stratified``: iterative stratification (Sechidis et al., 2011), so every class (single-label)
  or every label (multi-label) keeps its share in every split; regression stratifies on quantile bins.
- ``group``: whole groups (patients, subjects) go to one split, never two; groups are also
  stratified by their labels.
- ``auto``: ``official`` if the source has a split, ``group`` if records have groups,
  ``stratified`` for classification, else ``random``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from vitune.config import SPLIT_METHODS
from vitune.data.sources.base import Record
from vitune.errors import UserError
from vitune.tasks import get_task

log = logging.getLogger(__name__)

_SOURCE_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "trainval": "train",
    "train_val": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}


@dataclass
class SplitAssignment:
    """The split of each record (same order as the input) and the method actually used."""

    splits: list[str]
    method: str

    def counts(self) -> dict[str, int]:
        """Number of records per split, in train/validation/test order, empty splits left out."""
        return {name: self.splits.count(name) for name in ("train", "validation", "test") if name in self.splits}


def assign_splits(
    records: Sequence[Record],
    labels: Sequence[Any],
    task: str,
    method: str = "auto",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    official: bool = False,
) -> SplitAssignment:
    """Split ``records`` (with their encoded ``labels``) by ``method``; see the module docstring.

    ``official`` says the source assigns splits itself (ChestX-ray14 lists); records whose
    ``split`` is set (split folders) count as a source split too.
    """
    if method not in SPLIT_METHODS:
        raise UserError(f"unknown split method {method!r}: use one of {', '.join(SPLIT_METHODS)}")
    if len(records) != len(labels):
        raise ValueError("records and labels must have the same length")
    rng = np.random.default_rng(seed)
    strata = _strata(labels, task)
    groups = [r.group for r in records]
    has_groups = any(g is not None and g != "" for g in groups)
    has_source_split = official or any(r.split for r in records)
    resolved = _resolve_method(method, has_source_split, has_groups, task)
    fractions = {"train": 1.0 - val_fraction - test_fraction, "validation": val_fraction, "test": test_fraction}
    if resolved == "official":
        splits = _source_splits(records, strata, groups, has_groups, fractions, rng)
    else:
        item_groups = groups  # whatever the method, a patient/subject never spans two splits
        use_strata = strata if resolved in ("stratified", "group") else np.zeros((len(records), 0))
        splits = _stratify(np.arange(len(records)), use_strata, item_groups, fractions, rng)
    assignment = SplitAssignment(splits=splits, method=resolved)
    log.info("split (%s, seed %d): %s", resolved, seed, _format_counts(assignment.counts()))
    return assignment


def _resolve_method(method: str, has_source_split: bool, has_groups: bool, task: str) -> str:
    if method == "official" and not has_source_split:
        raise UserError(
            "--split official needs a source that defines its splits (split folders or the "
            "ChestX-ray14 lists); use --split auto, random, stratified or group"
        )
    if method == "group" and not has_groups:
        raise UserError("--split group needs a group per image: pass --group-column C (patient/subject id)")
    if method != "auto":
        return method
    if has_source_split:
        return "official"
    if has_groups:
        return "group"
    return get_task(task).default_split


def _strata(labels: Sequence[Any], task: str) -> np.ndarray:
    """A 0/1 (or count) matrix ``[n, k]`` that stratification balances."""
    if len(labels) == 0:
        return np.zeros((0, 0))
    return get_task(task).strata(labels)


def _source_splits(
    records: Sequence[Record],
    strata: np.ndarray,
    groups: list[str | None],
    has_groups: bool,
    fractions: dict[str, float],
    rng: np.random.Generator,
) -> list[str]:
    """Keep the source's splits; carve out of train what the source does not provide.

    Carved fractions are of the train pool: ChestX-ray14's validation is ``val_fraction`` of
    ``train_val_list.txt``, patient-grouped.
    """
    splits = [_SOURCE_SPLIT_NAMES.get((r.split or "train").lower(), "train") for r in records]
    present = set(splits)
    pool = np.array([i for i, s in enumerate(splits) if s == "train"], dtype=np.int64)
    if "validation" in present or not len(pool):
        return splits
    carve_test = fractions["test"] if "test" not in present else 0.0
    wanted = {"train": 1.0 - fractions["validation"] - carve_test, "validation": fractions["validation"]}
    if carve_test:
        wanted["test"] = carve_test
    carve_groups = [groups[i] for i in pool] if has_groups else [None] * len(pool)
    carved = _stratify(pool, strata[pool], carve_groups, wanted, rng)
    for index, split in zip(pool, carved):
        splits[index] = split
    return splits


def _stratify(
    indices: np.ndarray,
    strata: np.ndarray,
    groups: Sequence[str | None],
    fractions: dict[str, float],
    rng: np.random.Generator,
) -> list[str]:
    """Iterative stratification of ``indices`` over whole groups; returns a split name per index.

    Items are groups (a record without a group is its own item). Each item carries the sum of
    its members' label vectors and its size. The rarest label is placed first, each item going
    to the split that still wants most of that label; a split with no example of the label yet
    goes first (while it has room) so rare labels reach every split. Items with no label fill the
    splits that are furthest below their target size. With an empty label matrix this is a seeded random split
    with exact sizes.
    """
    if not len(indices):
        return []
    names = [name for name, fraction in fractions.items() if fraction > 0]
    shares = np.array([fractions[name] for name in names])
    item_of, item_counts, item_sizes = _items(groups, strata)
    n_items = len(item_sizes)
    remaining_size = shares * item_sizes.sum()
    remaining_label = shares[:, None] * item_counts.sum(axis=0)[None, :]
    have_label = np.zeros_like(remaining_label)
    have_any = np.zeros(len(names))
    item_split = np.full(n_items, -1, dtype=np.int64)
    tiebreak = rng.random((n_items, len(names)))

    def place(item: int, label: int | None) -> None:
        has_room = remaining_size > 0  # a full split no longer jumps the queue: fractions hold on small data
        if label is None:
            keys = np.lexsort((tiebreak[item], remaining_size, (have_any == 0) & has_room))
        else:
            keys = np.lexsort((tiebreak[item], remaining_size, remaining_label[:, label],
                               (have_label[:, label] == 0) & has_room))
        split = keys[-1]
        item_split[item] = split
        remaining_size[split] -= item_sizes[item]
        remaining_label[split] -= item_counts[item]
        have_label[split] += item_counts[item] > 0
        have_any[split] += 1

    positive = item_counts > 0
    while True:
        unassigned = item_split < 0
        label_left = positive[unassigned].sum(axis=0)
        if not label_left.any():
            break
        candidates = np.flatnonzero(label_left > 0)
        fewest = candidates[label_left[candidates] == label_left[candidates].min()]
        label = int(rng.choice(fewest))
        for item in rng.permutation(np.flatnonzero(unassigned & positive[:, label])):
            place(int(item), label)
    for item in rng.permutation(np.flatnonzero(item_split < 0)):
        place(int(item), None)
    return [names[item_split[item_of[i]]] for i in range(len(indices))]


def _items(groups: Sequence[str | None], strata: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map records to items (their group, or themselves): item index per record, label sums, sizes."""
    keys: dict[str, int] = {}
    item_of = np.empty(len(groups), dtype=np.int64)
    for i, group in enumerate(groups):
        if group is None or group == "":
            item_of[i] = len(keys)
            keys[f"\0{i}"] = item_of[i]  # a record without a group is its own item
        else:
            item_of[i] = keys.setdefault(group, len(keys))
    n_items = len(keys)
    counts = np.zeros((n_items, strata.shape[1] if strata.ndim == 2 else 0))
    np.add.at(counts, item_of, strata.reshape(len(groups), -1))
    sizes = np.bincount(item_of, minlength=n_items).astype(np.float64)
    return item_of, counts, sizes


def _format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items()) or "no records"
