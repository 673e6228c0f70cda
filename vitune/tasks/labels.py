"""Raw label values and their encoding: the pieces each task's :meth:`~vitune.tasks.base.Task.encode` uses.

Raw labels come from the readers: a class name, a list of names, a number, a numeric string, or
one image's CheXpert-style findings (:class:`LabelStates`). A value that cannot be encoded raises
:class:`BadLabel`, whose reason goes to ``dataset.json`` ``skipped``. Which task a source's labels
describe, and their names, is :mod:`vitune.tasks.label_space`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

LABEL_SEPARATOR = "|"  # between several labels of one image, as in ChestX-ray14's CSV
# CheXpert-style finding columns: 1 positive, 0 negative, -1 uncertain, blank not mentioned.
POSITIVE, NEGATIVE, UNCERTAIN, MISSING = "positive", "negative", "uncertain", "missing"
STATES = (POSITIVE, NEGATIVE, UNCERTAIN, MISSING)
STATE_OF_CELL = {"1": POSITIVE, "1.0": POSITIVE, "0": NEGATIVE, "0.0": NEGATIVE, "-1": UNCERTAIN, "-1.0": UNCERTAIN,
                 "": MISSING}
UNCERTAIN_POLICIES = ("ignore", "zeros", "ones")  # CheXpert's U-Ignore (unknown, masked), U-Zeros, U-Ones
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
        if all(math.isnan(value) for value in row):
            raise BadLabel("no known label (every finding blank, or uncertain under --uncertain ignore)")
        return row


def state_counts(raws: Iterable[Any], names: list[str]) -> dict[str, dict[str, int]]:
    """Per label, how many images are positive, negative, uncertain and missing (before the policy)."""
    counts = {name: dict.fromkeys(STATES, 0) for name in names}
    for raw in raws:
        for name in names:
            counts[name][raw.get(name, MISSING)] += 1
    return counts


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
    if float(value).is_integer():
        return str(int(value))
    return str(value)


def names_of(raw: Any, separator: str | None) -> list[str]:
    """The class names in a raw label: a list's items, or a string split on ``separator``."""
    if isinstance(raw, (list, tuple)):
        return [class_name(value) for value in raw if not is_missing(value)]
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


def number_or_none(raw: Any) -> float | None:
    """The raw label as a number (see :func:`to_score`), or None when it is not one."""
    try:
        return to_score(raw)
    except BadLabel:
        return None
