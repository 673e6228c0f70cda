"""``vitune evaluate``: a run's metrics on a split with bootstrap intervals, tuned thresholds and plots.

Decision thresholds (multi-label) are tuned per label on the *validation* split (the F1-optimal
cut-off) and then applied to the evaluated split, so the test figures stay honest; F1 is reported
at 0.5 and at the tuned thresholds. Confidence intervals are 95 % percentile bootstrap intervals
over resampled images; a resample in which a label has a single class cannot score that label's
AUC and is left out (the number of usable resamples is reported).

Output: ``RUN_DIR/eval/<split>/metrics_<split>.json`` with ``roc.png``, ``pr.png`` (classification),
``confusion.png`` (single-label) or ``scatter.png`` (regression), plus ``RUN_DIR/thresholds.json``
for ``vitune predict``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vitune.config import EvaluateConfig
from vitune.data.dataset_dir import load_dataset_dir, require_split
from vitune.errors import UserError
from vitune.evaluation.plots import plot_task
from vitune.models.forward import pixel_batches
from vitune.models.run import Run, load_run
from vitune.runtime.progress import progress
from vitune.storage.atomic import write_atomic
from vitune.tasks.core import Task, get_task

log = logging.getLogger(__name__)

CONFIDENCE = 0.95
MIN_VALID_RESAMPLES = 20  # fewer usable resamples than this give no interval
BOOTSTRAP_CELLS = 4_000_000  # resample-by-image cells held in memory at once
TUNING_SPLIT = "validation"


# --- bootstrap -------------------------------------------------------------------------------


def resample_counts(n: int, n_bootstrap: int, seed: int):
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
    sorted_score, positive = score[order], y[order] > 0.5
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    drawn = counts[:, order]
    pos = np.add.reduceat(np.where(positive, drawn, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(positive, 0.0, drawn), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    wins = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def _weighted_f1(counts: np.ndarray, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """F1 of binary predictions under each row of ``counts`` (NaN where the label has one class)."""
    tp = counts @ ((pred > 0) & (y > 0.5)).astype(np.float64)
    fp = counts @ ((pred > 0) & (y <= 0.5)).astype(np.float64)
    fn = counts @ ((pred == 0) & (y > 0.5)).astype(np.float64)
    positives = tp + fn
    one_class = (positives == 0) | (positives == counts.sum(axis=1))
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    return np.where(one_class, np.nan, f1)


def _interval(values: list[np.ndarray]) -> tuple[list[float] | None, int]:
    samples = np.concatenate(values) if values else np.zeros(0)
    samples = samples[np.isfinite(samples)]
    if len(samples) < MIN_VALID_RESAMPLES:
        return None, int(len(samples))
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return [float(low), float(high)], int(len(samples))


def _per_label(statistic, counts: np.ndarray, targets: np.ndarray, values: np.ndarray, columns) -> np.ndarray:
    """``[b, len(columns)]``: ``statistic(counts, y, value)`` of each label on its known (non-NaN) images."""
    known = ~np.isnan(targets)
    return np.stack([statistic(counts[:, known[:, j]], targets[known[:, j], j], values[known[:, j], j])
                     for j in columns], axis=1)


def _classification_replicates(task: Task, y_true, scores, labels, point, counts, thresholds) -> dict[str, np.ndarray]:
    """Per-resample AUC per label, macro AUC and the task's second statistic (F1 or accuracy)."""
    targets = task.indicator(y_true, scores.shape[1])
    aucs = _per_label(weighted_auc, counts, targets, scores, range(len(labels)))
    scored = [j for j, name in enumerate(labels) if point.per_label[name]["roc_auc"] is not None]
    # A resample that loses one class of a scored label is skipped, so every macro averages the same labels.
    out = {task.macro_auc: aucs[:, scored].mean(axis=1) if scored else np.full(len(counts), np.nan)}
    out.update({f"roc_auc/{name}": aucs[:, j] for j, name in enumerate(labels)})
    if task.multi_output:
        preds = scores >= thresholds
        out["f1_macro"] = (_per_label(_weighted_f1, counts, targets, preds, scored).mean(axis=1) if scored
                           else np.full(len(counts), np.nan))
    else:
        correct = (scores.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
        out["accuracy"] = counts @ correct / len(correct)
    return out


def _regression_replicates(y_true: np.ndarray, preds: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(preds, dtype=np.float64).reshape(-1)
    n = len(y)
    residual = counts @ (y - p) ** 2
    total = counts @ y**2 - (counts @ y) ** 2 / n
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(total > 0, 1 - residual / total, np.nan)
    return {"rmse": np.sqrt(residual / n), "mae": counts @ np.abs(y - p) / n, "r2": r2}


def bootstrap_intervals(
    task: str | Task,
    y_true: np.ndarray,
    scores: np.ndarray,
    labels: list[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
    thresholds: np.ndarray | float = 0.5,
) -> dict:
    """95 % percentile bootstrap intervals of the task's metrics and of each label's AUC.

    Returns ``{"metrics": {key: [low, high] | None}, "per_label": {label: [low, high] | None},
    "valid_resamples": {key: n}}``. Multi-label: ``roc_auc_macro``, ``f1_macro`` (at
    ``thresholds``); single-label: ``roc_auc_ovr``, ``accuracy``; regression: ``rmse``, ``mae``, ``r2``.
    """
    if n_bootstrap < 1:
        raise UserError(f"--bootstrap {n_bootstrap} must be at least 1 (0 would give no intervals)")
    task = get_task(task)
    scores = np.asarray(scores, dtype=np.float64)
    point = task.metrics(y_true, scores, labels, thresholds)
    replicates: dict[str, list[np.ndarray]] = {}
    for counts in resample_counts(len(y_true), n_bootstrap, seed):
        if task.is_classification:
            batch = _classification_replicates(task, y_true, scores, labels, point, counts, thresholds)
        else:
            batch = _regression_replicates(y_true, scores, counts)
        for key, values in batch.items():
            replicates.setdefault(key, []).append(values)
    result: dict = {"metrics": {}, "per_label": {}, "valid_resamples": {}}
    for key, values in replicates.items():
        interval, valid = _interval(values)
        if key.startswith("roc_auc/"):
            result["per_label"][key.split("/", 1)[1]] = interval
        else:
            result["metrics"][key] = interval
            result["valid_resamples"][key] = valid
    return result


# --- thresholds ------------------------------------------------------------------------------


def f1_optimal_threshold(y: np.ndarray, score: np.ndarray) -> tuple[float, float] | None:
    """The score cut-off (predict positive when ``score >= t``) maximising F1, with that F1.

    None when ``y`` has no positive (nothing to tune on).
    """
    from sklearn.metrics import precision_recall_curve

    if not (np.asarray(y) > 0.5).any():
        return None
    precision, recall, cutoffs = precision_recall_curve(np.asarray(y) > 0.5, score)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no cut-off
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return float(cutoffs[best]), float(f1[best])


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> tuple[np.ndarray, dict]:
    """Per-label F1-optimal thresholds on the known rows (0.5 where a label has no positive) and their F1."""
    thresholds = np.full(len(labels), 0.5)
    f1s: dict[str, float | None] = {}
    for j, name in enumerate(labels):
        known = ~np.isnan(y_true[:, j])
        tuned = f1_optimal_threshold(y_true[known, j], probs[known, j])
        if tuned is None:
            log.warning("label %s has no positive in the tuning split: its threshold stays 0.5", name)
            f1s[name] = None
            continue
        thresholds[j], f1s[name] = tuned
    return thresholds, f1s


# --- evaluate --------------------------------------------------------------------------------


def split_scores(run: Run, split_data, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets and the run's scores over one DATASET_DIR split."""
    batches = progress(pixel_batches(split_data, batch_size), total=math.ceil(len(split_data) / batch_size),
                       desc=f"scoring {split_data.split}", unit="batch")
    scores = run.scores(batches)
    y_true = np.asarray(split_data.with_format("numpy")["labels"])
    return y_true, scores


def _choose_split(ds, split: str, dataset_dir: Path) -> tuple[str, str | None]:
    if split == "test" and "test" not in ds and TUNING_SPLIT in ds:
        note = f"{dataset_dir} has no test split: evaluated on validation (the thresholds' tuning split)"
        log.warning(note)
        return TUNING_SPLIT, note
    if len(require_split(ds, split, dataset_dir)) == 0:
        raise UserError(f"the {split!r} split of {dataset_dir} is empty: choose another --split")
    return split, None


def _tuned_thresholds(run: Run, ds, split: str, y_eval, scores_eval, batch_size: int) -> tuple[np.ndarray, dict]:
    if split == TUNING_SPLIT:
        y_val, scores_val = y_eval, scores_eval
    else:
        y_val, scores_val = split_scores(run, ds[TUNING_SPLIT], batch_size)
    return tune_thresholds(np.asarray(y_val, dtype=np.float64), scores_val, run.labels)


@dataclass
class EvaluateResult:
    """What ``vitune evaluate`` measured on one split; ``to_json()`` is ``metrics_<split>.json``.

    ``metrics`` has the spec keys (multi-label also ``f1_macro_tuned``); ``per_label`` adds
    ``roc_auc_ci`` and, multi-label, ``f1_tuned`` and ``threshold_tuned``; ``thresholds`` (multi-label)
    are the validation-tuned ones; ``plots`` are relative to the RUN_DIR.
    """

    task: str
    split: str
    num_samples: int
    data: str
    metrics: dict
    confidence_intervals: dict
    per_label: dict
    bootstrap: dict
    path: Path
    note: str | None = None
    thresholds: dict | None = None
    plots: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The document written to ``RUN_DIR/eval/<split>/metrics_<split>.json``."""
        document = {k: v for k, v in asdict(self).items() if k not in ("path", "note", "thresholds", "plots")}
        document.update({k: getattr(self, k) for k in ("note", "thresholds") if getattr(self, k) is not None})
        document["plots"] = self.plots
        return document


def _scored_split(run: Run, config: EvaluateConfig):
    """(dataset, the evaluated split, a note or None, its targets and scores)."""
    dataset_dir = run.dir.dataset_dir(config.data)
    ds, info = load_dataset_dir(dataset_dir)
    run.check_dataset(info, dataset_dir)
    split, note = _choose_split(ds, config.split, dataset_dir)
    y_true, scores = split_scores(run, ds[split], config.batch_size)
    log.info("scored %d %s images", len(y_true), split)
    return ds, dataset_dir, split, note, y_true, scores


def evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Evaluate ``RUN_DIR/model`` on a split with bootstrap intervals and plots; write ``metrics_<split>.json``.

    Multi-label runs also get per-label thresholds tuned on validation (``RUN_DIR/thresholds.json``,
    used by ``vitune predict``) and F1 at those thresholds.
    """
    run = load_run(config.run, config.device)
    ds, dataset_dir, split, note, y_true, scores = _scored_split(run, config)
    task = run.task
    point = task.metrics(y_true, scores, run.labels)
    intervals = bootstrap_intervals(task, y_true, scores, run.labels, config.bootstrap, config.seed)
    result = EvaluateResult(
        task=task.name, split=split, num_samples=int(len(y_true)), data=str(dataset_dir),
        metrics=dict(point.metrics), confidence_intervals=intervals["metrics"], per_label=point.per_label,
        bootstrap={"resamples": config.bootstrap, "seed": config.seed, "confidence": CONFIDENCE,
                   "valid_resamples": intervals["valid_resamples"]},
        path=run.dir.eval_metrics(split), note=note,
    )
    for name in run.labels if task.is_classification else []:
        result.per_label[name]["roc_auc_ci"] = intervals["per_label"].get(name)
    if task.tunes_thresholds:
        if split == TUNING_SPLIT:
            result.note = f"{note or 'evaluated on validation'}; thresholds were tuned on it too, so f1_macro_tuned is optimistic"
        thresholds, tuned_f1 = np.full(len(run.labels), 0.5), {}
        if TUNING_SPLIT in ds:
            thresholds, tuned_f1 = _tuned_thresholds(run, ds, split, y_true, scores, config.batch_size)
        _add_tuned(result, run, y_true, scores, thresholds, tuned_f1)
    plots = plot_task(task, y_true, scores, run.labels, run.dir.eval_dir(split), split)
    result.plots = {k: str(p.relative_to(run.run_dir)) for k, p in plots.items()}
    write_atomic(result.path, json.dumps(result.to_json(), indent=2) + "\n")
    return result


def _add_tuned(result: EvaluateResult, run: Run, y_true, scores, thresholds: np.ndarray, tuned_f1: dict) -> None:
    """F1 at the validation-tuned thresholds, and ``RUN_DIR/thresholds.json``."""
    tuned = run.task.metrics(y_true, scores, run.labels, thresholds)
    result.metrics["f1_macro_tuned"] = tuned.metrics["f1_macro"]
    for name in run.labels:
        result.per_label[name]["f1_tuned"] = tuned.per_label[name]["f1"]
        result.per_label[name]["threshold_tuned"] = tuned.per_label[name]["threshold"]
    result.thresholds = {
        "tuned_on": TUNING_SPLIT if tuned_f1 else None,
        "values": {name: float(t) for name, t in zip(run.labels, thresholds)},
    }
    if tuned_f1:
        details = {"tuned_on": TUNING_SPLIT, "criterion": "f1", "f1_on_validation": tuned_f1,
                   "evaluated_split": result.split}
        result.thresholds["path"] = str(run.dir.save_thresholds(result.thresholds["values"], details))
