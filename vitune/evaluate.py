"""``vitune evaluate``: a run's metrics on a split with bootstrap intervals, tuned thresholds and plots.

Decision thresholds (multi-label) are tuned per label on the *validation* split (the F1-optimal
cut-off) and then applied to the evaluated split, so the test figures stay honest; F1 is reported
at 0.5 and at the tuned thresholds. Confidence intervals are 95 % percentile bootstrap intervals
over resampled images; a resample in which a label has a single class cannot score that label's
AUC and is left out (the number of usable resamples is reported).

Output: ``RUN_DIR/eval/<split>/metrics_<split>.json`` with ``roc.png``, ``pr.png`` (classification)
and ``confusion.png`` (single-label), plus ``RUN_DIR/thresholds.json`` for ``vitune predict``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from vitune.data.dataset_dir import DatasetInfo, load_dataset_dir, require_image_size, require_split
from vitune.errors import UserError
from vitune.inference import pixel_batches
from vitune.metrics import compute_metrics
from vitune.plots import plot_confusion, plot_precision_recall, plot_predicted_vs_true, plot_roc
from vitune.run_dir import Run, dataset_dir_of, load_run, save_thresholds

log = logging.getLogger(__name__)

CONFIDENCE = 0.95
MIN_VALID_RESAMPLES = 20  # fewer usable resamples than this give no interval
BOOTSTRAP_CELLS = 4_000_000  # resample-by-image cells held in memory at once
TUNING_SPLIT = "validation"


def eval_dir(run_dir: Path | str, split: str) -> Path:
    """Where ``vitune evaluate`` writes the results of ``split``."""
    return Path(run_dir) / "eval" / split


def metrics_file(run_dir: Path | str, split: str) -> Path:
    """``RUN_DIR/eval/<split>/metrics_<split>.json``."""
    return eval_dir(run_dir, split) / f"metrics_{split}.json"


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


def _binary_targets(task: str, y_true: np.ndarray, n_outputs: int) -> np.ndarray:
    """``[N, K]`` 0/1 targets: multi-label as is, single-label one-vs-rest."""
    if task == "single_label":
        return np.eye(n_outputs)[np.asarray(y_true, dtype=np.int64)]
    return np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)


def _interval(values: list[np.ndarray]) -> tuple[list[float] | None, int]:
    samples = np.concatenate(values) if values else np.zeros(0)
    samples = samples[np.isfinite(samples)]
    if len(samples) < MIN_VALID_RESAMPLES:
        return None, int(len(samples))
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return [float(low), float(high)], int(len(samples))


def _classification_replicates(task, y_true, scores, labels, point, counts, thresholds) -> dict[str, np.ndarray]:
    """Per-resample AUC per label, macro AUC and the task's second statistic (F1 or accuracy)."""
    targets = _binary_targets(task, y_true, scores.shape[1])
    aucs = np.stack([weighted_auc(counts, targets[:, j], scores[:, j]) for j in range(len(labels))], axis=1)
    scored = [j for j, name in enumerate(labels) if point.per_label[name]["roc_auc"] is not None]
    macro_key = "roc_auc_macro" if task == "multi_label" else "roc_auc_ovr"
    # A resample that loses one class of a scored label is skipped, so every macro averages the same labels.
    out = {macro_key: aucs[:, scored].mean(axis=1) if scored else np.full(len(counts), np.nan)}
    out.update({f"roc_auc/{name}": aucs[:, j] for j, name in enumerate(labels)})
    if task == "multi_label":
        preds = scores >= thresholds
        out["f1_macro"] = (np.stack([_weighted_f1(counts, targets[:, j], preds[:, j]) for j in scored], axis=1)
                           .mean(axis=1) if scored else np.full(len(counts), np.nan))
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
    task: str,
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
    scores = np.asarray(scores, dtype=np.float64)
    point = compute_metrics(task, y_true, scores, labels, thresholds)
    replicates: dict[str, list[np.ndarray]] = {}
    for counts in resample_counts(len(y_true), n_bootstrap, seed):
        if task == "regression":
            batch = _regression_replicates(y_true, scores, counts)
        else:
            batch = _classification_replicates(task, y_true, scores, labels, point, counts, thresholds)
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
    """Per-label F1-optimal thresholds (0.5 where a label has no positive) and the F1 each reaches."""
    thresholds = np.full(len(labels), 0.5)
    f1s: dict[str, float | None] = {}
    for j, name in enumerate(labels):
        tuned = f1_optimal_threshold(y_true[:, j], probs[:, j])
        if tuned is None:
            log.warning("label %s has no positive in the tuning split: its threshold stays 0.5", name)
            f1s[name] = None
            continue
        thresholds[j], f1s[name] = tuned
    return thresholds, f1s


def write_plots(task: str, y_true: np.ndarray, scores: np.ndarray, labels: list[str], out_dir: Path, split: str):
    """ROC and precision-recall curves (classification), confusion matrix (single-label) or a scatter (regression)."""
    if task == "regression":
        title = f"Predicted vs true ({split})"
        return {"scatter": plot_predicted_vs_true(y_true, scores, out_dir / "scatter.png", title)}
    targets = _binary_targets(task, y_true, scores.shape[1])
    plots = {
        "roc": plot_roc(targets, scores, labels, out_dir / "roc.png", title=f"ROC ({split})"),
        "pr": plot_precision_recall(targets, scores, labels, out_dir / "pr.png", title=f"Precision-recall ({split})"),
    }
    if task == "single_label":
        plots["confusion"] = plot_confusion(
            np.asarray(y_true, dtype=np.int64), scores.argmax(axis=1), labels, out_dir / "confusion.png",
            title=f"Confusion matrix ({split})",
        )
    return plots


# --- evaluate --------------------------------------------------------------------------------


def check_compatible(run: Run, info: DatasetInfo, dataset_dir: Path) -> None:
    """Fail clearly when the dataset's task, labels or image size do not fit the run's model."""
    if info.task != run.task:
        raise UserError(
            f"{dataset_dir} is a {info.task} dataset but the run's model is {run.task}: pass the run's own --data"
        )
    if run.task != "regression" and list(info.labels) != run.labels:
        raise UserError(
            f"{dataset_dir} labels {info.labels} differ from the model's {run.labels}: pass the run's own --data"
        )
    require_image_size(info, dataset_dir, run.prep.image_size, str(run.run_dir))


def split_scores(run: Run, split_data, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets and the run's scores over one DATASET_DIR split."""
    from tqdm.auto import tqdm

    batches = tqdm(pixel_batches(split_data, batch_size), total=math.ceil(len(split_data) / batch_size),
                   desc=f"scoring {split_data.split}", unit="batch", leave=False, disable=None)
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


def evaluate(
    run_dir: Path | str,
    data: Path | str | None = None,
    split: str = "test",
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    device: str | None = None,
) -> dict:
    """Evaluate ``RUN_DIR/model`` on ``split`` of ``data`` (default: the run's own DATASET_DIR).

    Falls back to the validation split when ``split`` is ``"test"`` and there is none (said in
    ``"note"``). Returns and writes ``RUN_DIR/eval/<split>/metrics_<split>.json``: ``task``,
    ``split``, ``num_samples``, ``metrics`` (spec keys, multi-label also ``f1_macro_tuned``),
    ``confidence_intervals``, ``per_label`` (with ``roc_auc_ci``; multi-label ``f1_tuned`` and
    ``threshold_tuned``), ``thresholds``, ``bootstrap``, ``plots``. Multi-label runs also get
    ``RUN_DIR/thresholds.json`` (tuned on validation) for ``vitune predict``.
    """
    if batch_size < 1 or n_bootstrap < 0:
        raise UserError(f"--batch-size must be at least 1 and --bootstrap 0 or more (got {batch_size}, {n_bootstrap})")
    run = load_run(run_dir, device)
    dataset_dir = dataset_dir_of(run_dir, data)
    ds, info = load_dataset_dir(dataset_dir)
    check_compatible(run, info, dataset_dir)
    split, note = _choose_split(ds, split, dataset_dir)
    y_true, scores = split_scores(run, ds[split], batch_size)
    log.info("scored %d %s images", len(y_true), split)

    thresholds, tuned_f1 = np.full(len(run.labels), 0.5), {}
    if run.task == "multi_label" and TUNING_SPLIT in ds:
        thresholds, tuned_f1 = _tuned_thresholds(run, ds, split, y_true, scores, batch_size)
    result = compute_metrics(run.task, y_true, scores, run.labels)
    intervals = bootstrap_intervals(run.task, y_true, scores, run.labels, n_bootstrap, seed)
    out_dir = eval_dir(run_dir, split)
    report = {
        "task": run.task,
        "split": split,
        "num_samples": int(len(y_true)),
        "data": str(dataset_dir),
        "metrics": dict(result.metrics),
        "confidence_intervals": intervals["metrics"],
        "per_label": result.per_label,
        "bootstrap": {"resamples": n_bootstrap, "seed": seed, "confidence": CONFIDENCE,
                      "valid_resamples": intervals["valid_resamples"]},
    }
    if run.task == "multi_label" and split == TUNING_SPLIT:
        note = f"{note or 'evaluated on validation'}; thresholds were tuned on it too, so f1_macro_tuned is optimistic"
    if note:
        report["note"] = note
    for name in run.labels if run.task != "regression" else []:
        report["per_label"][name]["roc_auc_ci"] = intervals["per_label"].get(name)
    if run.task == "multi_label":
        _add_tuned(report, run, y_true, scores, thresholds, tuned_f1, split)
    report["plots"] = {k: str(p.relative_to(run_dir)) for k, p in
                       write_plots(run.task, y_true, scores, run.labels, out_dir, split).items()}
    path = metrics_file(run_dir, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    report["path"] = str(path)
    return report


def _add_tuned(report: dict, run: Run, y_true, scores, thresholds: np.ndarray, tuned_f1: dict, split: str) -> None:
    """F1 at the validation-tuned thresholds, and ``RUN_DIR/thresholds.json``."""
    tuned = compute_metrics(run.task, y_true, scores, run.labels, thresholds)
    report["metrics"]["f1_macro_tuned"] = tuned.metrics["f1_macro"]
    for name in run.labels:
        report["per_label"][name]["f1_tuned"] = tuned.per_label[name]["f1"]
        report["per_label"][name]["threshold_tuned"] = tuned.per_label[name]["threshold"]
    report["thresholds"] = {
        "tuned_on": TUNING_SPLIT if tuned_f1 else None,
        "values": {name: float(t) for name, t in zip(run.labels, thresholds)},
    }
    if tuned_f1:
        details = {"tuned_on": TUNING_SPLIT, "criterion": "f1", "f1_on_validation": tuned_f1,
                   "evaluated_split": split}
        report["thresholds"]["path"] = str(save_thresholds(run.run_dir, report["thresholds"]["values"], details))
