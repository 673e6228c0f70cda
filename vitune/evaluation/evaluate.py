"""``vitune evaluate``: a run's metrics on a split with bootstrap intervals, tuned thresholds and plots.

Decision thresholds (multi-label) are tuned per label on the *validation* split (the F1-optimal
cut-off) and then applied to the evaluated split, so the test figures stay honest; F1 is reported
at 0.5 and at the tuned thresholds. The metrics and their 95 % bootstrap intervals are the run's
task's (:meth:`vitune.tasks.base.Task.metrics`, :meth:`~vitune.tasks.base.Task.bootstrap_intervals`).
With ``--tta flip|crops`` every split (the tuning split too) is scored under the views of
:mod:`vitune.inference.tta`, each view's calibrated probabilities averaged per image.

A cross-validation's parent (``vitune train --folds K``, :class:`vitune.models.folds.FoldEnsemble`) is
evaluated as the folds' ensemble, on a split none of them trained on (test): the mean of their calibrated
probabilities, thresholds tuned by each fold on its own held-out fold and averaged (no validation is left
that the ensemble has not seen), ``"ensemble": {"folds": K, ...}`` in the output.

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
from vitune.data.dataset_dir import require_split
from vitune.data.folds import open_run_dataset
from vitune.data.metadata import metadata_groups
from vitune.errors import UserError
from vitune.evaluation.plots import plot_reliability, plot_subgroups, plot_task
from vitune.inference.backend import LogitsBackend, TorchBackend, backend_device, open_backend
from vitune.inference.tta import TestTimeAugmentation
from vitune.models.folds import FoldEnsemble, load_scoring_run
from vitune.models.forward import pixel_batches
from vitune.models.run import Run
from vitune.runtime.progress import progress
from vitune.storage.atomic import write_atomic
from vitune.tasks.bootstrap import CONFIDENCE, scored_columns
from vitune.tasks.calibration import calibration_report
from vitune.tasks.subgroups import subgroup_metrics

log = logging.getLogger(__name__)

TUNING_SPLIT = "validation"
FOLDS_TUNING = "folds' own validation"  # an ensemble's thresholds: each fold's, tuned on its held-out fold, averaged


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


def fold_tuned_thresholds(ensemble: FoldEnsemble, batch_size: int, backend: str,
                          tta: TestTimeAugmentation) -> tuple[np.ndarray, dict]:
    """A fold ensemble's thresholds: each fold's F1-optimal thresholds on its own validation (its held-out fold,
    which no other tuning data can replace: the folds trained on all of train+validation), averaged per label
    over the folds where the label has a positive (0.5 where none has), with the folds' mean F1 there."""
    tuned = []
    for fold in ensemble.folds:
        ds, _, _ = open_run_dataset(fold.dir)
        y_val, scores_val = split_scores(fold, ds[TUNING_SPLIT], batch_size, open_backend(fold, backend), tta)
        tuned.append(tune_thresholds(np.asarray(y_val, dtype=np.float64), scores_val, fold.labels))
    thresholds = np.full(len(ensemble.labels), 0.5)
    f1s: dict[str, float | None] = {}
    for j, name in enumerate(ensemble.labels):
        fold_thresholds, fold_f1s = [], []
        for values, f1_of_fold in tuned:
            if f1_of_fold[name] is not None:
                fold_thresholds.append(values[j])
                fold_f1s.append(f1_of_fold[name])
        f1s[name] = float(np.mean(fold_f1s)) if fold_f1s else None
        if fold_thresholds:
            thresholds[j] = float(np.mean(fold_thresholds))
    return thresholds, f1s


def split_view_logits(run: Run, split_data, batch_size: int, backend: LogitsBackend | None = None,
                      tta: TestTimeAugmentation | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Targets and the run's logits ``[V, N, K]`` over one DATASET_DIR split under each ``tta`` view
    (default: the images alone, ``V = 1``), from ``backend`` (default: torch)."""
    backend = backend or TorchBackend(run)
    tta = tta or TestTimeAugmentation()
    batches = progress(pixel_batches(split_data, batch_size), total=math.ceil(len(split_data) / batch_size),
                       desc=f"scoring {split_data.split}", unit="batch")
    logits = np.concatenate([tta.per_view(backend.logits(tta.views(batch))) for batch in batches], axis=1)
    y_true = np.asarray(split_data.with_format("numpy")["labels"])
    return y_true, logits


def split_logits(run: Run, split_data, batch_size: int,
                 backend: LogitsBackend | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Targets and the run's logits over one DATASET_DIR split, from ``backend`` (default: torch)."""
    y_true, view_logits = split_view_logits(run, split_data, batch_size, backend)
    return y_true, view_logits[0]


def view_scores(run: Run, view_logits: np.ndarray, tta: TestTimeAugmentation, calibrated: bool = True) -> np.ndarray:
    """The views' scores averaged per image: each view's logits temperature-scaled (when ``calibrated`` and
    the run is) and turned into probabilities first, so the mean is of calibrated probabilities."""
    flat = view_logits.reshape(-1, *view_logits.shape[2:])  # [V * N, ...]: a fold ensemble's rows are [folds, K]
    scores = run.logits_to_scores(flat) if calibrated else run.uncalibrated_scores(flat)
    return tta.average(scores)


def split_scores(run: Run, split_data, batch_size: int, backend: LogitsBackend | None = None,
                 tta: TestTimeAugmentation | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Targets and the run's scores (temperature-scaled when the run is calibrated, averaged over the
    ``tta`` views) over one DATASET_DIR split."""
    tta = tta or TestTimeAugmentation()
    y_true, view_logits = split_view_logits(run, split_data, batch_size, backend, tta)
    return y_true, view_scores(run, view_logits, tta)


def _choose_split(ds, split: str, dataset_dir: Path) -> tuple[str, str | None]:
    if split == "test" and "test" not in ds and TUNING_SPLIT in ds:
        note = f"{dataset_dir} has no test split: evaluated on validation (the thresholds' tuning split)"
        log.warning(note)
        return TUNING_SPLIT, note
    if len(require_split(ds, split, dataset_dir)) == 0:
        raise UserError(f"the {split!r} split of {dataset_dir} is empty: choose another --split")
    return split, None


def _tuned_thresholds(run: Run, ds, split: str, y_eval, scores_eval, batch_size: int,
                      backend: LogitsBackend, tta: TestTimeAugmentation) -> tuple[np.ndarray, dict]:
    """Thresholds tuned on validation's calibrated scores, under the same ``--tta`` as the evaluated split."""
    if split == TUNING_SPLIT:
        y_val, scores_val = y_eval, scores_eval
    else:
        y_val, scores_val = split_scores(run, ds[TUNING_SPLIT], batch_size, backend, tta)
    return tune_thresholds(np.asarray(y_val, dtype=np.float64), scores_val, run.labels)


@dataclass
class EvaluateResult:
    """What ``vitune evaluate`` measured on one split; ``to_json()`` is ``metrics_<split>.json``.

    ``metrics`` has the spec keys (multi-label also ``f1_macro_tuned``); ``per_label`` adds
    ``roc_auc_ci`` and, multi-label, ``f1_tuned`` and ``threshold_tuned``; ``thresholds`` (multi-label)
    are the validation-tuned ones; ``plots`` are relative to the RUN_DIR; ``tta`` names the ``--tta``
    views the scores were averaged over.
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
    calibration: dict | None = None
    subgroups: dict | None = None
    subgroup_gaps: dict | None = None
    ensemble: dict | None = None
    tta: str = "none"

    def to_json(self) -> dict:
        """The document written to ``RUN_DIR/eval/<split>/metrics_<split>.json``."""
        optional = ("note", "thresholds", "calibration", "subgroups", "subgroup_gaps", "ensemble")
        document = {k: v for k, v in asdict(self).items() if k not in ("path", "plots", *optional)}
        document.update({k: getattr(self, k) for k in optional if getattr(self, k) is not None})
        document["plots"] = self.plots
        return document


@dataclass
class _ScoredSplit:
    """The evaluated split: the dataset, its name, a note or None, targets, scores and the scores without
    the temperature (both averaged over the ``--tta`` views)."""

    ds: object
    info: object
    dataset_dir: Path
    split: str
    note: str | None
    y_true: np.ndarray
    scores: np.ndarray
    uncalibrated: np.ndarray


def _scored_split(run: Run | FoldEnsemble, config: EvaluateConfig, backend: LogitsBackend,
                  tta: TestTimeAugmentation) -> _ScoredSplit:
    """Score the evaluated split (temperature-scaled unless ``--no-calibrate``, averaged over the ``--tta``
    views); a fold run's validation is its fold's."""
    ds, info, dataset_dir = open_run_dataset(run.dir, config.data)
    run.check_dataset(info, dataset_dir)
    if isinstance(run, FoldEnsemble) and config.split in ("train", TUNING_SPLIT):
        raise UserError(f"the folds of {run.run_dir} trained on train+validation: evaluate their ensemble on "
                        f"test (--split test), or one fold on its own validation (vitune evaluate {run.dir.fold(0)})")
    if isinstance(run, FoldEnsemble) and config.split not in ds:
        raise UserError(f"{dataset_dir} has no {config.split!r} split: the folds trained on train+validation, "
                        "so their ensemble has nothing held out to be evaluated on")
    split, note = _choose_split(ds, config.split, dataset_dir)
    _check_by(config.by, info, dataset_dir)
    y_true, view_logits = split_view_logits(run, ds[split], config.batch_size, backend, tta)
    log.info("scored %d %s images (--tta %s: %d view(s) each)", len(y_true), split, tta.mode, tta.n_views)
    return _ScoredSplit(ds, info, dataset_dir, split, note, y_true, view_scores(run, view_logits, tta),
                        view_scores(run, view_logits, tta, calibrated=False))


def _check_by(by: list[str] | None, info, dataset_dir: Path) -> None:
    """``--by`` columns must be metadata the DATASET_DIR kept."""
    kept = info.metadata_columns or []
    missing = [column for column in by or () if column not in kept]
    if missing:
        raise UserError(f"--by {','.join(missing)}: {dataset_dir} has no such metadata column (it has "
                        f"{', '.join(kept) or 'none'}): prepare the dataset again with vitune 0.3, or --meta-columns")


def evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Evaluate ``RUN_DIR/model`` on a split with bootstrap intervals and plots; write ``metrics_<split>.json``.

    Multi-label runs also get per-label thresholds tuned on validation (``RUN_DIR/thresholds.json``,
    used by ``vitune predict``) and F1 at those thresholds.
    """
    run = load_scoring_run(config.run, backend_device(config.backend, config.device), calibrate=not config.no_calibrate)
    backend = open_backend(run, config.backend)
    tta = TestTimeAugmentation(config.tta, run.device)
    scored = _scored_split(run, config, backend, tta)
    ds, dataset_dir, split, note, y_true, scores = (scored.ds, scored.dataset_dir, scored.split, scored.note,
                                                    scored.y_true, scored.scores)
    task = run.task
    point = task.metrics(y_true, scores, run.labels)
    intervals = task.bootstrap_intervals(y_true, scores, run.labels, config.bootstrap, config.seed)
    result = EvaluateResult(
        task=task.name, split=split, num_samples=int(len(y_true)), data=str(dataset_dir),
        metrics=dict(point.metrics), confidence_intervals=intervals["metrics"], per_label=point.per_label,
        bootstrap={"resamples": config.bootstrap, "seed": config.seed, "confidence": CONFIDENCE,
                   "valid_resamples": intervals["valid_resamples"]},
        path=run.dir.eval_metrics(split), note=note, tta=config.tta,
    )
    for name, interval in intervals["per_label"].items():  # each label's AUC (classification)
        result.per_label[name]["roc_auc_ci"] = interval
    if task.tunes_thresholds:
        if split == TUNING_SPLIT:
            result.note = f"{note or 'evaluated on validation'}; thresholds were tuned on it too, so f1_macro_tuned is optimistic"
        thresholds, tuned_f1, tuned_on = np.full(len(run.labels), 0.5), {}, TUNING_SPLIT
        if isinstance(run, FoldEnsemble):
            thresholds, tuned_f1 = fold_tuned_thresholds(run, config.batch_size, config.backend, tta)
            tuned_on = FOLDS_TUNING
        elif TUNING_SPLIT in ds:
            thresholds, tuned_f1 = _tuned_thresholds(run, ds, split, y_true, scores, config.batch_size, backend, tta)
        _add_tuned(result, run, y_true, scores, thresholds, tuned_f1, tuned_on)
    plots = plot_task(task, y_true, scores, run.labels, run.dir.eval_dir(split), split)
    if task.is_classification:
        result.calibration = _calibration(run, scored, point)
        plots["reliability"] = plot_reliability(result.calibration["curves"], run.dir.eval_dir(split) / "reliability.png")
    if config.by:
        _add_subgroups(result, run, config, scored)
        plots["subgroups"] = plot_subgroups(result.subgroups, task.main_metric, run.dir.eval_dir(split) / "subgroups.png")
    if isinstance(run, FoldEnsemble):
        result.ensemble = {"folds": len(run.folds), "runs": [fold.run_dir.name for fold in run.folds],
                           "combined": "mean of the folds' calibrated probabilities" if run.temperature else
                           "mean of the folds' probabilities"}
    result.plots = {k: str(p.relative_to(run.run_dir)) for k, p in plots.items()}
    write_atomic(result.path, json.dumps(result.to_json(), indent=2) + "\n")
    return result


def _calibration(run: Run, scored: _ScoredSplit, point) -> dict:
    """ECE and Brier of the scores, the uncalibrated ECE beside them, and the temperature used."""
    scored_labels = [run.labels[j] for j in scored_columns(point, run.labels)]
    report = calibration_report(run.task, scored.y_true, scored.scores, run.labels, scored_labels)
    before = calibration_report(run.task, scored.y_true, scored.uncalibrated, run.labels, scored_labels)
    return {"bins": report["bins"], "ece_macro": report["ece_macro"], "ece_macro_uncalibrated": before["ece_macro"],
            "brier_macro": report["brier_macro"], "temperature": run.temperature, "per_label": report["per_label"],
            "curves": report["curves"]}


def _add_subgroups(result: EvaluateResult, run: Run, config: EvaluateConfig, scored: _ScoredSplit) -> None:
    """Per ``--by`` column each value's main metric with its interval, the largest gap, and (multi-label)
    each value's true-positive rate per label at the tuned thresholds."""
    thresholds = np.asarray(list(result.thresholds["values"].values())) if result.thresholds else 0.5
    data = scored.ds[scored.split]
    result.subgroups, result.subgroup_gaps = {}, {}
    for column in config.by:
        groups = metadata_groups(column, data[column], config.age_bins)
        per_value, gap = subgroup_metrics(run.task, scored.y_true, scored.scores, run.labels, groups,
                                          config.bootstrap, config.seed, thresholds)
        if run.task.tunes_thresholds:
            for value, entry in per_value.items():
                rows = np.asarray(groups) == value
                entry["tpr_tuned"] = true_positive_rates(scored.y_true[rows], scored.scores[rows], run.labels, thresholds)
        result.subgroups[column] = per_value
        result.subgroup_gaps[column] = gap


def true_positive_rates(y_true: np.ndarray, probs: np.ndarray, labels: list[str], thresholds) -> dict:
    """Per label the share of known positives called positive at ``thresholds`` (None without a positive)."""
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(labels),))
    rates = {}
    for j, name in enumerate(labels):
        positive = np.asarray(y_true[:, j], dtype=np.float64) == 1.0
        rates[name] = float(np.mean(probs[positive, j] >= thresholds[j])) if positive.any() else None
    return rates


def _add_tuned(result: EvaluateResult, run: Run | FoldEnsemble, y_true, scores, thresholds: np.ndarray, tuned_f1: dict,
               tuned_on: str = TUNING_SPLIT) -> None:
    """F1 at the thresholds tuned on ``tuned_on``, and ``RUN_DIR/thresholds.json``."""
    tuned = run.task.metrics(y_true, scores, run.labels, thresholds)
    result.metrics["f1_macro_tuned"] = tuned.metrics["f1_macro"]
    for name in run.labels:
        result.per_label[name]["f1_tuned"] = tuned.per_label[name]["f1"]
        result.per_label[name]["threshold_tuned"] = tuned.per_label[name]["threshold"]
    result.thresholds = {
        "tuned_on": tuned_on if tuned_f1 else None,
        "values": {name: float(t) for name, t in zip(run.labels, thresholds)},
    }
    if tuned_f1:
        details = {"tuned_on": tuned_on, "criterion": "f1", "f1_on_validation": tuned_f1,
                   "evaluated_split": result.split}
        result.thresholds["path"] = str(run.dir.save_thresholds(result.thresholds["values"], details))
