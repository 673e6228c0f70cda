"""The main metric per subgroup (sex, age bin, view...) with bootstrap intervals, and the largest gap.

The subgroups are scored under the *same* resamples as the overall interval
(:func:`vitune.tasks.bootstrap.resample_counts` with the same seed): a resample's image counts,
restricted to one subgroup's images, are that subgroup's resample. The gap between two subgroups
is the difference of their resampled values, so its interval accounts for both groups' uncertainty. fairlearn's ``MetricFrame`` gives per-group point values but no bootstrap and no
multi-label macro AUC; this module adds both on the tasks' own weighted statistics.
"""

from __future__ import annotations

import numpy as np

from vitune.tasks.base import Task
from vitune.tasks.bootstrap import interval_of, resample_counts

MIN_SUBGROUP = 10  # images below which a subgroup gets no interval (and is left out of the gap)
UNKNOWN_GROUP = "unknown"  # the images whose attribute is missing: reported, never part of a gap
TOO_SMALL = "too small for an interval"


def subgroup_metrics(task: Task, y_true, scores: np.ndarray, labels: list[str], groups: list[str],
                     n_bootstrap: int, seed: int, thresholds=0.5) -> tuple[dict, dict | None]:
    """Per subgroup ``{"n", MAIN, MAIN + "_ci", "positives"?}`` and the largest gap between two subgroups.

    ``groups`` names each image's subgroup. A subgroup under :data:`MIN_SUBGROUP` images, or whose
    resamples rarely score the metric, has ``MAIN + "_ci": None`` and a ``"note"`` saying why. The
    gap is ``{MAIN: how much better the best is than the worst, "ci": [lo, hi] | None, "between": [worst, best]}`` over the
    subgroups with an interval (None when fewer than two have one).
    """
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    key = task.main_metric
    names = sorted(set(groups))
    members = {name: np.flatnonzero(np.asarray(groups) == name) for name in names}
    points = {name: task.metrics(y_true[rows], scores[rows], labels, thresholds) for name, rows in members.items()}
    samples: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for counts in resample_counts(len(y_true), n_bootstrap, seed):
        for name, rows in members.items():
            replicates = task.bootstrap_replicates(y_true[rows], scores[rows], labels, points[name], counts[:, rows],
                                                   thresholds)
            samples[name].append(replicates.metrics[key])
    result = {}
    for name, rows in members.items():
        entry = {"n": int(len(rows)), key: points[name].metrics[key]}
        if task.is_classification:
            entry["positives"] = {label: int(values["positives"]) for label, values in points[name].per_label.items()
                                  if "positives" in values}
        interval, _ = interval_of(samples[name])
        if len(rows) < MIN_SUBGROUP or interval is None or entry[key] is None:
            entry[key + "_ci"] = None
            entry["note"] = f"{TOO_SMALL} (n={len(rows)})"
        else:
            entry[key + "_ci"] = interval
        result[name] = entry
    comparable = [name for name in names if name != UNKNOWN_GROUP and result[name][key + "_ci"] is not None]
    return result, _largest_gap(task, result, comparable, samples)


def _usable(chunks: list[np.ndarray]) -> np.ndarray:
    values = np.concatenate(chunks)
    return values[np.isfinite(values)]


def _largest_gap(task: Task, result: dict, comparable: list[str], samples: dict[str, list[np.ndarray]]) -> dict | None:
    """The gap between the best and the worst subgroup on the main metric, with its paired interval."""
    if len(comparable) < 2:
        return None
    key = task.main_metric
    ranked = sorted(comparable, key=lambda name: result[name][key], reverse=not task.greater_is_better)
    worst, best = ranked[0], ranked[-1]
    sign = 1.0 if task.greater_is_better else -1.0  # the gap is reported as a positive shortfall
    # The subgroups hold disjoint images, so their resampled values are independent draws: the k-th usable
    # value of one is paired with the k-th of the other (a resample usable for both is rarer for small groups).
    best_values, worst_values = _usable(samples[best]), _usable(samples[worst])
    paired = min(len(best_values), len(worst_values))
    differences = sign * (best_values[:paired] - worst_values[:paired])
    interval, _ = interval_of([differences])
    gap = sign * (result[best][key] - result[worst][key])
    return {key: float(gap), "ci": interval, "between": [worst, best]}
