"""Tasks: one object per task holding everything that differs between them.

``multi_label`` (several findings per image, sigmoid per label), ``single_label`` (one class per
image, softmax) and ``regression`` (one number per image). Code elsewhere asks the task object
(``get_task(info.task).loss(...)``) instead of comparing task names; the names themselves are the
strings written into ``dataset.json``, ``metrics.json`` and the model config's ``problem_type``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vitune.errors import UserError

REGRESSION_OUTPUT = "score"  # the name of a regression model's one output
LABEL_SEPARATOR = "|"  # between several labels of one image, as in ChestX-ray14's CSV


def unscale_target(values: np.ndarray, label_range: Sequence[float] | None) -> np.ndarray:
    """[0, 1] -> the target's own units, with the training split's (min, max)."""
    lo, hi = label_range or (0.0, 1.0)
    return np.asarray(values, dtype=np.float64) * (hi - lo) + lo


class Task:
    """What one task means for data, training, metrics, heads and predictions.

    Capabilities are attributes (``is_classification``, ``tunes_thresholds``, ...); behaviour that
    differs is a method. Instances are singletons: compare them with ``is``.
    """

    name: str
    problem_type: str
    main_metric: str
    greater_is_better: bool
    metric_keys: tuple[str, ...]
    macro_auc: str | None = None  # the key of the macro AUC-ROC over labels, when there is one
    is_classification = True
    multi_output = False  # several 0/1 targets per image
    tunes_thresholds = False  # per-label decision thresholds tuned on validation
    takes_pos_weight = False  # --pos-weight auto applies
    default_split = "stratified"
    label_dtype = "int64"  # of the DATASET_DIR ``labels`` column

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    def label_feature(self):
        """The ``datasets`` feature of the ``labels`` column: ``label_dtype`` per image, or a list of them."""
        import datasets

        value = datasets.Value(self.label_dtype)
        return datasets.Sequence(value) if self.multi_output else value

    def output_names(self, labels: Sequence[str]) -> list[str]:
        """Names of the model outputs (``id2label``): the labels, or ``["score"]`` for regression."""
        return list(labels)

    def encode(self, raw: Any, names: list[str], separator: str | None) -> Any:
        """The DATASET_DIR ``labels`` value of one raw label (see :mod:`vitune.tasks.labels`)."""
        raise NotImplementedError

    def strata(self, labels: Sequence[Any]) -> np.ndarray:
        """A 0/1 matrix ``[n, k]`` that stratified splitting balances."""
        raise NotImplementedError

    def label_text(self, value: Any, labels: Sequence[str]) -> str:
        """An encoded label as text for people: label names, or the value."""
        raise NotImplementedError

    def frequencies(self, values: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
        """Per label the number of images with it (regression: n, mean, min, max)."""
        counts = self._counts(values, len(labels))
        return {name: int(count) for name, count in zip(labels, counts)}

    def _counts(self, values: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError

    def label_range(self, values: np.ndarray) -> tuple[float, float] | None:
        """The (min, max) a regression target is scaled with; None for classification."""
        return None

    def batch_labels(self, values: list, label_range: Sequence[float] | None = None):
        """The label tensor of one batch, as the loss takes it."""
        raise NotImplementedError

    def loss(self, logits, labels, regression_loss: str = "mse", pos_weight=None):
        """Mean loss of a batch, in float32 whatever the autocast dtype (multi-label: over the known cells)."""
        raise NotImplementedError

    def soft_targets(self, labels, n_outputs: int, smoothing: float = 0.0):
        """Batch labels as float targets that mixup can blend, label smoothing ``smoothing`` applied."""
        return labels.float()

    def scores(self, logits: np.ndarray, config=None) -> np.ndarray:
        """Logits -> probabilities (classification) or predictions in target units (regression)."""
        raise NotImplementedError

    def targets_from_batches(self, label_ids: np.ndarray, label_range: Sequence[float] | None) -> np.ndarray:
        """Targets in their own units from what the loss saw (regression undoes the [0, 1] scaling)."""
        return np.asarray(label_ids)

    def metrics(self, y_true, scores, labels: list[str], thresholds=0.5):
        """The task's :class:`vitune.tasks.metrics.MetricsResult`."""
        raise NotImplementedError

    def is_better(self, candidate: float | None, best: float | None) -> bool:
        """Whether ``candidate`` beats ``best`` on the main metric (None never wins)."""
        if candidate is None or best is None:
            return candidate is not None
        return candidate > best if self.greater_is_better else candidate < best

    def indicator(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        """0/1 targets ``[N, outputs]`` (one-vs-rest for single_label)."""
        raise NotImplementedError

    def check_targets(self, y: np.ndarray, n_classes: int | None = None) -> tuple[np.ndarray, int]:
        """Validated head targets and the number of outputs; ``ValueError`` when they do not fit."""
        raise NotImplementedError

    def hard_predictions(self, scores: np.ndarray, thresholds=0.5) -> np.ndarray:
        """Class ids, a 0/1 matrix at ``thresholds``, or the values."""
        raise NotImplementedError

    def logreg_estimator(self, C: float, max_iter: int):
        """The scikit-learn linear head of this task (before standardisation; multi-output: of one label)."""
        raise NotImplementedError

    def prediction_columns(self, labels: Sequence[str]) -> list[str]:
        """CSV columns of ``vitune predict``."""
        return ["file", *labels, "predicted"]

    def explained_outputs(self, scores: np.ndarray, thresholds) -> list[int]:
        """The outputs ``vitune explain`` explains by default for one image: the labels at or above their
        thresholds (multi-label), else the most probable output (the class; regression's one score)."""
        chosen = [i for i, (p, t) in enumerate(zip(scores, thresholds)) if p >= t] if self.tunes_thresholds else []
        return chosen or [int(np.argmax(scores))]

    def prediction_row(self, file: str, scores: np.ndarray, labels: Sequence[str], thresholds) -> dict:
        """One CSV row: the file, one probability per label and the decision."""
        raise NotImplementedError


class MultiLabel(Task):
    """Several labels per image: one sigmoid per label, BCE, macro AUC-ROC."""

    name, problem_type = "multi_label", "multi_label_classification"
    main_metric = macro_auc = "roc_auc_macro"
    metric_keys = ("roc_auc_macro", "average_precision_macro", "f1_macro")
    multi_output = tunes_thresholds = takes_pos_weight = greater_is_better = True
    label_dtype = "float32"

    def encode(self, raw, names, separator):
        from vitune.tasks.labels import names_of, position

        row = [0.0] * len(names)
        for name in names_of(raw, separator):
            row[position(names, name)] = 1.0
        return row

    def strata(self, labels):
        return np.nan_to_num(np.asarray(labels, dtype=np.float64).reshape(len(labels), -1))  # unknown: not positive

    def label_text(self, value, labels):
        names, unknown = ([n for n, f in zip(labels, value) if test(f)] for test in (lambda f: f >= 0.5, np.isnan))
        return (", ".join(names) or "none") + (f" (unknown: {', '.join(unknown)})" if unknown else "")

    def _counts(self, values, k):
        return np.nansum(values.reshape(len(values), -1), axis=0) if len(values) else np.zeros(k)

    def batch_labels(self, values, label_range=None):
        import torch

        return torch.from_numpy(np.asarray([np.asarray(v) for v in values], dtype=np.float32))

    def loss(self, logits, labels, regression_loss="mse", pos_weight=None):
        import torch.nn.functional as F

        known = ~labels.isnan()  # BCE over the known cells: an unknown finding (NaN) adds nothing
        cells = F.binary_cross_entropy_with_logits(logits.float(), labels.nan_to_num().float(), pos_weight=pos_weight,
                                                   reduction="none")
        return (cells * known).sum() / known.sum().clamp(min=1)

    def soft_targets(self, labels, n_outputs, smoothing=0.0):
        return labels.float() * (1.0 - smoothing) + smoothing / 2  # NaN (unknown) stays NaN

    def scores(self, logits, config=None):
        from scipy.special import expit

        return expit(np.asarray(logits, dtype=np.float64))

    def metrics(self, y_true, scores, labels, thresholds=0.5):
        from vitune.tasks.metrics import multi_label_metrics

        return multi_label_metrics(y_true, scores, labels, thresholds)

    def indicator(self, y, n_outputs):
        return np.asarray(y, dtype=np.float64).reshape(len(y), -1)

    def check_targets(self, y, n_classes=None):
        y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if not np.isin(y[~np.isnan(y)], (0.0, 1.0)).all():
            raise ValueError("multi_label targets must be a 0/1 (or NaN: unknown) matrix [n_samples, n_labels]")
        return y, y.shape[1]

    def hard_predictions(self, scores, thresholds=0.5):
        return (scores >= thresholds).astype(np.int64)

    def logreg_estimator(self, C, max_iter):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, max_iter=max_iter)  # one per label (vitune.heads.logreg.fit_per_label)

    def prediction_row(self, file, scores, labels, thresholds):
        chosen = [name for name, p, t in zip(labels, scores, thresholds) if p >= t]
        return {"file": file, **{n: float(p) for n, p in zip(labels, scores)}, "predicted": LABEL_SEPARATOR.join(chosen)}


class SingleLabel(Task):
    """One class per image: softmax, cross-entropy, accuracy."""

    name, problem_type = "single_label", "single_label_classification"
    main_metric, macro_auc, greater_is_better = "accuracy", "roc_auc_ovr", True
    metric_keys = ("accuracy", "f1_macro", "roc_auc_ovr")

    def encode(self, raw, names, separator):
        from vitune.tasks.labels import BadLabel, names_of, position

        found = names_of(raw, None)
        if len(found) != 1:
            raise BadLabel("missing label" if not found else f"{len(found)} labels for a single-label task")
        return position(names, found[0])

    def strata(self, labels):
        classes = np.asarray(labels, dtype=np.int64)
        return np.eye(int(classes.max()) + 1)[classes]

    def label_text(self, value, labels):
        return labels[int(value)]

    def _counts(self, values, k):
        return np.bincount(values.astype(np.int64), minlength=k)

    def batch_labels(self, values, label_range=None):
        import torch

        return torch.as_tensor(np.asarray(values), dtype=torch.long)

    def loss(self, logits, labels, regression_loss="mse", pos_weight=None):
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), labels.float() if labels.is_floating_point() else labels.long())

    def soft_targets(self, labels, n_outputs, smoothing=0.0):
        import torch.nn.functional as F

        return F.one_hot(labels.long(), n_outputs).float() * (1.0 - smoothing) + smoothing / n_outputs

    def scores(self, logits, config=None):
        from scipy.special import softmax

        return softmax(np.asarray(logits, dtype=np.float64), axis=1)

    def metrics(self, y_true, scores, labels, thresholds=0.5):
        from vitune.tasks.metrics import single_label_metrics

        return single_label_metrics(y_true, scores, labels)

    def indicator(self, y, n_outputs):
        return np.eye(n_outputs)[np.asarray(y, dtype=np.int64)]

    def check_targets(self, y, n_classes=None):
        from sklearn.utils.multiclass import check_classification_targets

        check_classification_targets(y)
        if not np.all(np.equal(np.mod(y, 1), 0)) or y.min() < 0:
            raise ValueError("single_label targets must be class ids 0..K-1")
        y = y.astype(np.int64)
        return y, max(int(n_classes or 0), int(y.max()) + 1)

    def hard_predictions(self, scores, thresholds=0.5):
        return scores.argmax(axis=1)

    def logreg_estimator(self, C, max_iter):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, max_iter=max_iter)

    def prediction_columns(self, labels):
        return [*super().prediction_columns(labels), "probability"]

    def prediction_row(self, file, scores, labels, thresholds):
        best = int(np.argmax(scores))
        return {"file": file, **{n: float(p) for n, p in zip(labels, scores)}, "predicted": labels[best],
                "probability": float(scores[best])}


class Regression(Task):
    """One number per image: the model learns it scaled to [0, 1] with the training range; RMSE."""

    name = problem_type = "regression"
    main_metric, metric_keys = "rmse", ("rmse", "mae", "r2")
    label_dtype, default_split = "float32", "random"
    is_classification = greater_is_better = False

    def output_names(self, labels):
        return [REGRESSION_OUTPUT]

    def encode(self, raw, names, separator):
        from vitune.tasks.labels import to_score

        return to_score(raw)

    def strata(self, labels, bins: int = 10):
        values = np.asarray(labels, dtype=np.float64)
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        return np.eye(len(edges) + 1)[np.searchsorted(edges, values, side="right")]

    def label_text(self, value, labels):
        return f"{float(value):.4g}"

    def frequencies(self, values, labels):
        if not len(values):
            return {"n": 0}
        return {"n": len(values), "mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}

    def label_range(self, values):
        values = np.asarray(values, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        if hi <= lo:
            raise UserError(f"the training target is constant ({lo}): regression needs at least two distinct values")
        return lo, hi

    def batch_labels(self, values, label_range=None):
        import torch

        lo, hi = label_range  # the model learns the target scaled to [0, 1]
        return torch.from_numpy((np.asarray(values, dtype=np.float32).reshape(-1) - lo) / max(hi - lo, 1e-12))

    def loss(self, logits, labels, regression_loss="mse", pos_weight=None):
        import torch.nn.functional as F

        prediction, target = logits.float().reshape(-1), labels.float().reshape(-1)
        if regression_loss == "bce":
            return F.binary_cross_entropy_with_logits(prediction, target)
        return F.mse_loss(prediction, target)

    def scores(self, logits, config=None):
        out = np.asarray(logits, dtype=np.float64).reshape(-1)
        if getattr(config, "vitune_regression_loss", "mse") == "bce":
            from scipy.special import expit

            out = expit(out)
        return unscale_target(out, getattr(config, "vitune_label_range", None))

    def targets_from_batches(self, label_ids, label_range):
        return unscale_target(label_ids, label_range)

    def metrics(self, y_true, scores, labels, thresholds=0.5):
        from vitune.tasks.metrics import regression_metrics

        return regression_metrics(y_true, scores)

    def indicator(self, y, n_outputs):
        raise ValueError("regression targets have no 0/1 indicator")

    def check_targets(self, y, n_classes=None):
        return np.asarray(y, dtype=np.float64), 1

    def hard_predictions(self, scores, thresholds=0.5):
        return scores

    def logreg_estimator(self, C, max_iter):
        from sklearn.linear_model import Ridge

        return Ridge(alpha=1.0 / (2.0 * C))

    def prediction_columns(self, labels):
        return ["file", "predicted"]

    def prediction_row(self, file, scores, labels, thresholds):
        return {"file": file, "predicted": float(scores)}


MULTI_LABEL, SINGLE_LABEL, REGRESSION = MultiLabel(), SingleLabel(), Regression()
TASKS: dict[str, Task] = {task.name: task for task in (SINGLE_LABEL, MULTI_LABEL, REGRESSION)}
TASK_NAMES = tuple(TASKS)


def get_task(task: str | Task) -> Task:
    """The :class:`Task` named ``task`` (a Task is returned as is); an unknown name is a :class:`UserError`."""
    if isinstance(task, Task):
        return task
    try:
        return TASKS[task]
    except (KeyError, TypeError):
        raise UserError(f"unknown task {task!r}: use one of {', '.join(TASK_NAMES)}") from None
