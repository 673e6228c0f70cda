"""Label spaces: which task a source's raw labels describe, their names, and how to encode them.

Raw labels come from the readers: a class name, a list of names, a number, or a numeric string.
:func:`infer_label_space` picks the task (unless told) and the label names; :meth:`LabelSpace.encode`
turns each raw label into the DATASET_DIR ``labels`` value (multi-label: 0/1 floats in ``labels``
order; single-label: class index; regression: float) or raises :class:`BadLabel`, whose reason
goes to ``dataset.json`` ``skipped``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from vitune.config.base import UNCERTAIN_POLICIES
from vitune.data.sources.base import Record
from vitune.errors import UserError
from vitune.tasks.core import MULTI_LABEL, REGRESSION, SINGLE_LABEL, TASK_NAMES, Task, get_task

log = logging.getLogger(__name__)

SEPARATOR = "|"
DEFAULT_SCORE_NAME = "score"
# Numeric strings with this many distinct integer values or fewer are class ids (digits 0-9,
# ratings 1-5); more, or any fraction, makes them regression scores.
MAX_CLASS_IDS = 20
# Auto-detection tolerates this share of non-numeric values in a numeric column (reported as bad rows).
NUMERIC_SHARE = 0.9
# CheXpert-style finding columns: 1 positive, 0 negative, -1 uncertain, blank not mentioned.
POSITIVE, NEGATIVE, UNCERTAIN, MISSING = "positive", "negative", "uncertain", "missing"
STATES = (POSITIVE, NEGATIVE, UNCERTAIN, MISSING)
STATE_OF_CELL = {"1": POSITIVE, "1.0": POSITIVE, "0": NEGATIVE, "0.0": NEGATIVE, "-1": UNCERTAIN, "-1.0": UNCERTAIN,
                 "": MISSING}
UNCERTAIN_VALUES = dict(zip(UNCERTAIN_POLICIES, (math.nan, 0.0, 1.0)))  # what --uncertain makes of a -1


class BadLabel(ValueError):
    """A label that cannot be encoded; ``reason`` is the text reported in ``skipped``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def label_state(cell: str, column: str) -> str:
    """The state of one CheXpert-style cell (1, 0, -1 or blank); anything else is a :class:`BadLabel`."""
    try:
        return STATE_OF_CELL[cell.strip()]
    except KeyError:
        raise BadLabel(f"malformed label {cell.strip()!r} in column {column!r}: use 1, 0, -1 or blank") from None


class LabelStates(dict):
    """One image's findings read from one column per finding (CheXpert style): name -> state.

    Encoded as a multi-label row in which a missing finding, and an uncertain one under the
    ``ignore`` policy, is NaN: unknown, masked by the loss and the metrics.
    """

    def encode(self, names: list[str], uncertain: str) -> list[float]:
        """The ``labels`` row: positive 1, negative 0, missing NaN, uncertain by the ``uncertain`` policy."""
        values = {POSITIVE: 1.0, NEGATIVE: 0.0, MISSING: math.nan, UNCERTAIN: UNCERTAIN_VALUES[uncertain]}
        row = [values[self.get(name, MISSING)] for name in names]
        if all(math.isnan(v) for v in row):
            raise BadLabel("no known label (every finding blank, or uncertain under --uncertain ignore)")
        return row


def state_counts(raws: Iterable[Any], names: list[str]) -> dict[str, dict[str, int]]:
    """Per label, how many images are positive, negative, uncertain and missing (before the policy)."""
    counts = {name: dict.fromkeys(STATES, 0) for name in names}
    for raw in raws:
        for name in names:
            counts[name][raw.get(name, MISSING)] += 1
    return counts


@dataclass
class LabelSpace:
    """The task and label names of a dataset; ``label_range`` is (min, max) for regression.

    ``uncertain`` is the policy for CheXpert-style uncertain findings (``ignore``, ``zeros``, ``ones``).
    """

    task: str
    labels: list[str]
    label_range: tuple[float, float] | None = None
    separator: str = SEPARATOR
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


def position(names: list[str], name: str) -> int:
    """Index of label ``name`` in ``names``; an unknown name is a :class:`BadLabel`."""
    try:
        return names.index(name)
    except ValueError:
        raise BadLabel(f"unknown label {name!r}") from None


def is_missing(raw: Any) -> bool:
    """None, NaN and blank strings are missing labels (an empty list is a valid all-negative row)."""
    if raw is None:
        return True
    if isinstance(raw, float) and math.isnan(raw):
        return True
    return isinstance(raw, str) and not raw.strip()


def class_name(value: Any) -> str:
    """One class name from a raw value: strings stripped, integral numbers as ints (``3.0`` -> ``"3"``)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadLabel(f"malformed label {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadLabel(f"malformed label {value!r}")
    return str(int(value)) if float(value).is_integer() else str(value)


def names_of(raw: Any, separator: str | None) -> list[str]:
    """The class names in a raw label: a list's items, or a string split on ``separator``."""
    if isinstance(raw, (list, tuple)):
        return [class_name(v) for v in raw if not is_missing(v)]
    if isinstance(raw, str) and separator:
        return [part.strip() for part in raw.split(separator) if part.strip()]
    return [class_name(raw)]


def to_score(raw: Any) -> float:
    """A regression target from a number or numeric string; raises :class:`BadLabel` otherwise."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise BadLabel(f"non-numeric score {raw!r}")
    try:
        value = float(raw)
    except ValueError:
        raise BadLabel(f"non-numeric score {raw!r}") from None
    if not math.isfinite(value):
        raise BadLabel(f"non-finite score {raw!r}")
    return value


def _number(raw: Any) -> float | None:
    try:
        return to_score(raw)
    except BadLabel:
        return None


def detect_task(raws: Sequence[Any]) -> str:
    """The task raw labels describe: lists -> multi_label; numbers (JSON numbers, or numeric strings
    with a fraction or more than ``MAX_CLASS_IDS`` distinct values) -> regression; else single_label.
    """
    if any(isinstance(raw, (list, tuple, LabelStates)) for raw in raws):
        return MULTI_LABEL.name
    numbers = [value for value in map(_number, raws) if value is not None]
    if not raws or len(numbers) < NUMERIC_SHARE * len(raws):
        return SINGLE_LABEL.name
    typed = any(isinstance(raw, (int, float)) and not isinstance(raw, bool) for raw in raws)
    fractional = any(not value.is_integer() for value in numbers)
    return (REGRESSION if typed or fractional or len(set(numbers)) > MAX_CLASS_IDS else SINGLE_LABEL).name


def infer_label_space(
    records: Iterable[Record],
    task: str = "auto",
    label_order: Sequence[str] | None = None,
    label_name: str | None = None,
    uncertain: str = "ignore",
) -> LabelSpace:
    """The :class:`LabelSpace` of ``records``.

    ``task`` "auto" detects it (:func:`detect_task`). Class names are sorted (numerically when
    all are numbers) unless ``label_order`` fixes them (ChestX-ray14's 14 findings, CIFAR's class
    ids). With ``task="multi_label"`` string labels are split on ``|``. Regression has one label,
    ``label_name`` (the label column) or ``"score"``, and ``label_range`` = (min, max).
    Several finding columns (:class:`LabelStates`) are multi-label, ``uncertain`` their policy.
    """
    raws = [record.raw_label for record in records if not is_missing(record.raw_label)]
    if not raws:
        raise UserError("no record has a label: check --label-column and the label file")
    if task == "auto":
        task = detect_task(raws)
    elif task not in TASK_NAMES:
        raise UserError(f"unknown --task {task!r}: use auto or one of {', '.join(TASK_NAMES)}")
    if any(isinstance(raw, LabelStates) for raw in raws) and not get_task(task).multi_output:
        raise UserError(f"several label columns make a multi-label dataset, not {task}: drop --task or give one "
                        "--label-column")
    if get_task(task).is_classification:
        space = _class_space(raws, get_task(task), label_order)
        space.uncertain = uncertain
    else:
        space = _regression_space(raws, label_name)
    _log_counts(space, raws)
    return space


def _regression_space(raws: list[Any], label_name: str | None) -> LabelSpace:
    values = [value for value in map(_number, raws) if value is not None]
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
            found = names_of(raw, SEPARATOR if multi else None)
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
    if all(_number(name) is not None for name in names):
        return sorted(names, key=lambda name: (float(name), name))
    return sorted(names)


def _log_counts(space: LabelSpace, raws: list[Any]) -> None:
    if space.label_range is not None:
        low, high = space.label_range
        log.info("regression target %r: %d values in [%g, %g]", space.labels[0], len(raws), low, high)
        return
    if any(isinstance(raw, LabelStates) for raw in raws):
        shown = "; ".join(f"{name} " + " ".join(f"{k} {v}" for k, v in states.items() if v)
                          for name, states in state_counts(raws, space.labels).items())
        log.info("%s: %d labels, uncertain -> %s, missing -> unknown: %s", space.task, len(space.labels),
                 space.uncertain, shown)
        return
    counts: Counter[str] = Counter()
    separator = space.separator if get_task(space.task).multi_output else None
    for raw in raws:
        try:
            counts.update(names_of(raw, separator))
        except BadLabel:
            continue
    shown = ", ".join(f"{name} {counts.get(name, 0)}" for name in space.labels[:30])
    more = f" (+{len(space.labels) - 30} more)" if len(space.labels) > 30 else ""
    log.info("%s: %d labels: %s%s", space.task, len(space.labels), shown, more)
