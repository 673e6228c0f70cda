"""Bootstrap resampling by image, shared by the tasks' :meth:`~vitune.tasks.base.Task.bootstrap_replicates`.

Confidence intervals are 95 % percentile bootstrap intervals over resampled images. A resample is
a row of image counts (how often each image is drawn), so every statistic is a weighted one and a
whole chunk of resamples is one matrix product. A resample in which a label has a single class
cannot score that label's AUC and is left out (the number of usable resamples is reported).

scikit-learn's ``roc_auc_score`` takes ``sample_weight`` but scores one resample per call; the
weighted statistics here score a whole chunk of resamples in one vectorised pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from vitune.tasks.metrics import MetricsResult

CONFIDENCE = 0.95
MIN_VALID_RESAMPLES = 20  # fewer usable resamples than this give no interval
BOOTSTRAP_CELLS = 4_000_000  # resample-by-image cells held in memory at once


@dataclass
class Replicates:
    """One chunk of resamples: per metric, and per label (its AUC), the value under each resample.

    NaN marks a resample in which the statistic cannot be computed (a label with one class drawn).
    """

    metrics: dict[str, np.ndarray]
    per_label: dict[str, np.ndarray] = field(default_factory=dict)


def resample_counts(n: int, n_bootstrap: int, seed: int) -> Iterator[np.ndarray]:
    """Yield ``[b, n]`` matrices: how often each image is drawn in each of ``n_bootstrap`` resamples."""
    rng = np.random.default_rng(seed)
    chunk = max(1, BOOTSTRAP_CELLS // max(n, 1))
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        draws = rng.integers(0, n, size=(b, n)) + np.arange(b)[:, None] * n
        yield np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def weighted_auc(counts: np.ndarray, y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """AUC-ROC of binary ``y`` vs ``score`` under each row of image ``counts`` (NaN: one class drawn).

    Mann-Whitney with ties counted half, computed on score groups so every resample is one
    vectorised pass instead of a sort.
    """
    order = np.argsort(score, kind="stable")
    sorted_score = score[order]
    positive = y[order] > 0.5
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    drawn = counts[:, order]
    pos = np.add.reduceat(np.where(positive, drawn, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(positive, 0.0, drawn), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    wins = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def weighted_f1(counts: np.ndarray, y: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """F1 of binary predictions under each row of ``counts`` (NaN where the label has one class)."""
    true_positive = counts @ ((predicted > 0) & (y > 0.5)).astype(np.float64)
    false_positive = counts @ ((predicted > 0) & (y <= 0.5)).astype(np.float64)
    false_negative = counts @ ((predicted == 0) & (y > 0.5)).astype(np.float64)
    positives = true_positive + false_negative
    one_class = (positives == 0) | (positives == counts.sum(axis=1))
    denominator = 2 * true_positive + false_positive + false_negative
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2 * true_positive / denominator, 0.0)
    return np.where(one_class, np.nan, f1)


Statistic = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def per_label_statistic(statistic: Statistic, counts: np.ndarray, targets: np.ndarray, values: np.ndarray,
                        columns: Sequence[int]) -> np.ndarray:
    """``[b, len(columns)]``: ``statistic(counts, y, value)`` of each label on its known (non-NaN) images."""
    known = ~np.isnan(targets)
    per_column = [
        statistic(counts[:, known[:, j]], targets[known[:, j], j], values[known[:, j], j])
        for j in columns
    ]
    return np.stack(per_column, axis=1)


def scored_columns(point: MetricsResult, labels: list[str]) -> list[int]:
    """The labels whose AUC the data itself can score (both classes present): the ones macro means average."""
    return [j for j, name in enumerate(labels) if point.per_label[name]["roc_auc"] is not None]


def macro_statistic(statistic: Statistic, counts: np.ndarray, targets: np.ndarray, values: np.ndarray,
                    columns: Sequence[int]) -> np.ndarray:
    """Per resample, the mean of ``statistic`` over the label ``columns`` (all NaN when there is none)."""
    if not columns:
        return np.full(len(counts), np.nan)
    return per_label_statistic(statistic, counts, targets, values, columns).mean(axis=1)


def auc_replicates(counts: np.ndarray, targets: np.ndarray, scores: np.ndarray, labels: list[str],
                   point: MetricsResult, macro_key: str) -> Replicates:
    """Each label's AUC under each resample, and their macro mean under ``macro_key``.

    The macro mean averages the labels scored on the data itself; a resample that loses one class
    of such a label is NaN, and so skipped, so every macro value averages the same labels.
    """
    aucs = per_label_statistic(weighted_auc, counts, targets, scores, range(len(labels)))
    scored = scored_columns(point, labels)
    if scored:
        macro = aucs[:, scored].mean(axis=1)
    else:
        macro = np.full(len(counts), np.nan)
    return Replicates({macro_key: macro}, {name: aucs[:, j] for j, name in enumerate(labels)})


def interval_of(values: list[np.ndarray]) -> tuple[list[float] | None, int]:
    """The percentile interval of the finite values, and how many there were (None below the minimum)."""
    samples = np.concatenate(values) if values else np.zeros(0)
    samples = samples[np.isfinite(samples)]
    if len(samples) < MIN_VALID_RESAMPLES:
        return None, len(samples)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return [float(low), float(high)], len(samples)


def percentile_intervals(chunks: list[Replicates]) -> dict:
    """``{"metrics": {key: [low, high] | None}, "per_label": {label: [low, high] | None},
    "valid_resamples": {key: n}}`` from every chunk of resamples."""
    result: dict = {"metrics": {}, "per_label": {}, "valid_resamples": {}}
    for key in chunks[0].metrics:
        interval, valid = interval_of([chunk.metrics[key] for chunk in chunks])
        result["metrics"][key] = interval
        result["valid_resamples"][key] = valid
    for name in chunks[0].per_label:
        result["per_label"][name], _ = interval_of([chunk.per_label[name] for chunk in chunks])
    return result
