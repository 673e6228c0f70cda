"""The pointing game: how often an explanation's peak falls on the lesion it explains.

A hit is a peak inside the lesion's box widened by ``margin`` pixels on every side (half a patch
in ``bench/explain.py`` and the tests: a map on the patch grid cannot be sharper than that).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence


def inside(point: Sequence[float], box: Sequence[float], margin: float = 0.0) -> bool:
    """Whether ``(x, y)`` lies in ``[x0, y0, x1, y1]`` widened by ``margin``."""
    x, y = point
    x0, y0, x1, y1 = box
    return x0 - margin <= x <= x1 + margin and y0 - margin <= y <= y1 + margin


def pointing_hits(peaks: Mapping[str, Sequence[float]], boxes: Mapping[str, Sequence[float]],
                  margin: float = 0.0) -> list[bool]:
    """One hit or miss per boxed label that has a peak (labels without a box or a peak are left out)."""
    return [inside(peaks[label], box, margin) for label, box in boxes.items() if label in peaks]


def pointing_score(hits: Iterable[bool]) -> float:
    """The share of hits (0 for none)."""
    hits = list(hits)
    return sum(hits) / len(hits) if hits else 0.0
