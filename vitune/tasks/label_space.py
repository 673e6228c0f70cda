"""Label spaces: which task a source's raw labels describe, their names, and how to encode them.

:func:`infer_label_space` picks the task (unless told) and the label names from the raw labels the
readers found; :meth:`LabelSpace.encode` turns each raw label into the DATASET_DIR ``labels`` value
(multi-label: 0/1 floats in ``labels`` order; single-label: class index; regression: float) or
raises :class:`~vitune.tasks.labels.BadLabel`, whose reason goes to ``dataset.json`` ``skipped``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vitune.errors import UserError
from vitune.tasks import MULTI_LABEL, REGRESSION, SINGLE_LABEL, TASK_NAMES, Task, get_task
from vitune.tasks.labels import (
    LABEL_SEPARATOR,
    BadLabel,
    LabelStates,
    is_missing,
    names_of,
    number_or_none,
    state_counts,
)

log = logging.getLogger(__name__)

DEFAULT_SCORE_NAME = "score"
# Numeric strings with this many distinct integer values or fewer are class ids (digits 0-9,
# ratings 1-5); more, or any fraction, makes them regression scores.
MAX_CLASS_IDS = 20
# Auto-detection tolerates this share of non-numeric values in a numeric column (reported as bad rows).
NUMERIC_SHARE = 0.9
SHOWN_LABELS = 30  # label counts logged by name; the rest as a number


@dataclass
class LabelSpace:
    """The task and label names of a dataset; ``label_range`` is (min, max) for regression.

    ``uncertain`` is the policy for CheXpert-style uncertain findings (``ignore``, ``zeros``, ``ones``).
    """

    task: str
    labels: list[str]
    label_range: tuple[float, float] | None = None
    separator: str = LABEL_SEPARATOR
    uncertain: str = "ignore"
    _task: Task = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._task = get_task(self.task)
        if not self.labels:
            raise UserError("a label space needs at least one label")
        if len(set(self.labels)) != len(self.labels):
            duplicates = sorted(name for name, n in Counter(self.labels).items() if n > 1)
            raise UserError(f"duplicate label names: {', '.join(duplicates)}")

    def encode(self, raw_label: Any) -> list[float] | int | float:
        """The ``labels`` value of one raw label; raises :class:`BadLabel` (missing, malformed, unknown)."""
        if is_missing(raw_label):
            raise BadLabel("missing label")
        if isinstance(raw_label, LabelStates):
            return raw_label.encode(self.labels, self.uncertain)
        return self._task.encode(raw_label, self.labels, self.separator)


def detect_task(raws: Sequence[Any]) -> str:
    """The task raw labels describe: lists -> multi_label; numbers (JSON numbers, or numeric strings
    with a fraction or more than ``MAX_CLASS_IDS`` distinct values) -> regression; else single_label.
    """
    if any(isinstance(raw, (list, tuple, LabelStates)) for raw in raws):
        return MULTI_LABEL.name
    numbers = [value for value in map(number_or_none, raws) if value is not None]
    if not raws or len(numbers) < NUMERIC_SHARE * len(raws):
        return SINGLE_LABEL.name
    typed = any(isinstance(raw, (int, float)) and not isinstance(raw, bool) for raw in raws)
    fractional = any(not value.is_integer() for value in numbers)
    if typed or fractional or len(set(numbers)) > MAX_CLASS_IDS:
        return REGRESSION.name
    return SINGLE_LABEL.name


def infer_label_space(
    raw_labels: Iterable[Any],
    task: str = "auto",
    label_order: Sequence[str] | None = None,
    label_name: str | None = None,
    uncertain: str = "ignore",
) -> LabelSpace:
    """The :class:`LabelSpace` of the raw labels of a source's records.

    ``task`` "auto" detects it (:func:`detect_task`). Class names are sorted (numerically when
    all are numbers) unless ``label_order`` fixes them (ChestX-ray14's 14 findings, CIFAR's class
    ids). With ``task="multi_label"`` string labels are split on ``|``. Regression has one label,
    ``label_name`` (the label column) or ``"score"``, and ``label_range`` = (min, max).
    Several finding columns (:class:`LabelStates`) are multi-label, ``uncertain`` their policy.
    """
    raws = [raw for raw in raw_labels if not is_missing(raw)]
    if not raws:
        raise UserError("no record has a label: check --label-column and the label file")
    if task == "auto":
        task = detect_task(raws)
    elif task not in TASK_NAMES:
        raise UserError(f"unknown --task {task!r}: use auto or one of {', '.join(TASK_NAMES)}")
    chosen = get_task(task)
    if any(isinstance(raw, LabelStates) for raw in raws) and not chosen.multi_output:
        raise UserError(f"several label columns make a multi-label dataset, not {task}: drop --task or give one "
                        "--label-column")
    if chosen.is_classification:
        space = _class_space(raws, chosen, label_order)
        space.uncertain = uncertain
    else:
        space = _regression_space(raws, label_name)
    _log_counts(space, raws)
    return space


def _regression_space(raws: list[Any], label_name: str | None) -> LabelSpace:
    values = [value for value in map(number_or_none, raws) if value is not None]
    if not values:
        raise UserError("--task regression needs numeric labels, but none is a number: check --label-column")
    return LabelSpace(REGRESSION.name, [label_name or DEFAULT_SCORE_NAME], (min(values), max(values)))


def _class_space(raws: list[Any], task: Task, label_order: Sequence[str] | None) -> LabelSpace:
    if label_order:
        return LabelSpace(task.name, list(label_order))
    multi = task.multi_output
    names: set[str] = set()
    for raw in raws:
        try:
            found = names_of(raw, LABEL_SEPARATOR if multi else None)
        except BadLabel:
            continue  # reported when the record is encoded
        if multi or len(found) == 1:
            names.update(name for name in found if name)
    if not names:
        raise UserError(f"no usable {task.name} label found: check --label-column and --task")
    if not multi and len(names) < 2:
        raise UserError(f"only one class ({next(iter(names))!r}) found: a classifier needs at least two")
    return LabelSpace(task.name, sort_names(names))


def sort_names(names: Iterable[str]) -> list[str]:
    """Class names in a stable order: numerically when all are numbers, else alphabetically."""
    names = list(names)
    if all(number_or_none(name) is not None for name in names):
        return sorted(names, key=lambda name: (float(name), name))
    return sorted(names)


def _log_counts(space: LabelSpace, raws: list[Any]) -> None:
    if space.label_range is not None:
        low, high = space.label_range
        log.info("regression target %r: %d values in [%g, %g]", space.labels[0], len(raws), low, high)
        return
    if any(isinstance(raw, LabelStates) for raw in raws):
        _log_state_counts(space, raws)
        return
    counts: Counter[str] = Counter()
    separator = space.separator if get_task(space.task).multi_output else None
    for raw in raws:
        try:
            counts.update(names_of(raw, separator))
        except BadLabel:
            continue
    shown = ", ".join(f"{name} {counts.get(name, 0)}" for name in space.labels[:SHOWN_LABELS])
    more = ""
    if len(space.labels) > SHOWN_LABELS:
        more = f" (+{len(space.labels) - SHOWN_LABELS} more)"
    log.info("%s: %d labels: %s%s", space.task, len(space.labels), shown, more)


def _log_state_counts(space: LabelSpace, raws: list[Any]) -> None:
    """One line: per finding, its states that occur and how often (before the uncertain policy)."""
    per_label = []
    for name, states in state_counts(raws, space.labels).items():
        occurring = " ".join(f"{state} {count}" for state, count in states.items() if count)
        per_label.append(f"{name} {occurring}")
    log.info("%s: %d labels, uncertain -> %s, missing -> unknown: %s", space.task, len(space.labels),
             space.uncertain, "; ".join(per_label))
