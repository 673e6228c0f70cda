"""``multi_label``: several findings per image, one sigmoid per label, masked BCE, macro AUC-ROC.

A target may be unknown (NaN: missing, or uncertain under ``--uncertain ignore``): the loss, the
metrics and the bootstrap score each label on its known images only.
"""

from __future__ import annotations

import numpy as np

from vitune.tasks.base import Task
from vitune.tasks.bootstrap import auc_replicates, macro_statistic, scored_columns, weighted_f1
from vitune.tasks.labels import LABEL_SEPARATOR, names_of, position
from vitune.tasks.losses import MultiLabelLoss
from vitune.tasks.metrics import MetricsResult, binary_auc, mean_of_known


def _binary_average_precision(y: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import average_precision_score

    if y.sum() == 0:
        return None
    return float(average_precision_score(y, score))


class MultiLabel(Task):
    """Several labels per image: one sigmoid per label, BCE over the known cells, macro AUC-ROC."""

    name = "multi_label"
    problem_type = "multi_label_classification"
    main_metric = "roc_auc_macro"
    macro_auc = "roc_auc_macro"
    metric_keys = ("roc_auc_macro", "average_precision_macro", "f1_macro")
    greater_is_better = True
    multi_output = True
    tunes_thresholds = True
    takes_pos_weight = True
    label_dtype = "float32"

    def encode(self, raw, names, separator):
        row = [0.0] * len(names)
        for name in names_of(raw, separator):
            row[position(names, name)] = 1.0
        return row

    def strata(self, labels):
        matrix = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
        return np.nan_to_num(matrix)  # an unknown finding counts as not positive

    def label_text(self, value, labels):
        present = [name for name, flag in zip(labels, value) if flag >= 0.5]
        unknown = [name for name, flag in zip(labels, value) if np.isnan(flag)]
        text = ", ".join(present) or "none"
        if unknown:
            text += f" (unknown: {', '.join(unknown)})"
        return text

    def frequencies(self, values, labels):
        if len(values):
            counts = np.nansum(values.reshape(len(values), -1), axis=0)
        else:
            counts = np.zeros(len(labels))
        return {name: int(count) for name, count in zip(labels, counts)}

    def batch_labels(self, values, label_range=None):
        import torch

        rows = np.asarray([np.asarray(value) for value in values], dtype=np.float32)
        return torch.from_numpy(rows)

    def loss(self, logits, labels, regression_loss="mse", pos_weight=None, multi_label_loss=None):
        return (multi_label_loss or MultiLabelLoss())(logits, labels, pos_weight)

    def soft_targets(self, labels, n_outputs, smoothing=0.0):
        return labels.float() * (1.0 - smoothing) + smoothing / 2  # NaN (unknown) stays NaN

    def scores(self, logits, config=None):
        from scipy.special import expit

        return expit(np.asarray(logits, dtype=np.float64))

    def metrics(self, y_true, scores, labels, thresholds=0.5):
        """AUC-ROC, average precision and F1 per label, macro-averaged over the labels with both classes.

        Each label is scored on its known rows: an unknown target (NaN: missing, or uncertain under
        ``--uncertain ignore``) leaves that image out of that label only; ``unknown`` counts them.
        """
        from sklearn.metrics import f1_score

        y_true = np.asarray(y_true, dtype=np.float64)
        probs = np.asarray(scores, dtype=np.float64)
        thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(labels),))
        predictions = (probs >= thresholds).astype(int)
        per_label: dict[str, dict] = {}
        for j, name in enumerate(labels):
            known = ~np.isnan(y_true[:, j])
            y, p = y_true[known, j], probs[known, j]
            auc = binary_auc(y, p)
            f1 = float(f1_score(y, predictions[known, j], zero_division=0)) if auc is not None else None
            per_label[name] = {
                "roc_auc": auc,
                "average_precision": _binary_average_precision(y, p),
                "f1": f1,
                "threshold": float(thresholds[j]),
                "positives": int(y.sum()),
                "support": len(y),
                "unknown": int(len(known) - known.sum()),
            }
        metrics = {
            "roc_auc_macro": mean_of_known([values["roc_auc"] for values in per_label.values()]),
            "average_precision_macro": mean_of_known([values["average_precision"] for values in per_label.values()]),
            "f1_macro": mean_of_known([values["f1"] for values in per_label.values()]),
        }
        return MetricsResult(metrics, per_label)

    def bootstrap_replicates(self, y_true, scores, labels, point, counts, thresholds):
        """Per-label AUC, ``roc_auc_macro`` and ``f1_macro`` (at ``thresholds``), each label on its known images."""
        targets = self.indicator(y_true, scores.shape[1])
        replicates = auc_replicates(counts, targets, scores, labels, point, self.macro_auc)
        predictions = scores >= thresholds
        replicates.metrics["f1_macro"] = macro_statistic(weighted_f1, counts, targets, predictions,
                                                         scored_columns(point, labels))
        return replicates

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
        probabilities = {name: float(p) for name, p in zip(labels, scores)}
        return {"file": file, **probabilities, "predicted": LABEL_SEPARATOR.join(chosen)}

    def explained_outputs(self, scores, thresholds):
        chosen = [index for index, (p, t) in enumerate(zip(scores, thresholds)) if p >= t]
        return chosen or super().explained_outputs(scores, thresholds)


MULTI_LABEL = MultiLabel()
