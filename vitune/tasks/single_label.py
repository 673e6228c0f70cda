"""``single_label``: one class per image, softmax, cross-entropy, accuracy."""

from __future__ import annotations

import numpy as np

from vitune.tasks.base import Task
from vitune.tasks.bootstrap import auc_replicates
from vitune.tasks.labels import BadLabel, names_of, position
from vitune.tasks.losses import cross_entropy
from vitune.tasks.metrics import MetricsResult, binary_auc, mean_of_known


class SingleLabel(Task):
    """One class per image: softmax, cross-entropy, accuracy."""

    name = "single_label"
    problem_type = "single_label_classification"
    main_metric = "accuracy"
    macro_auc = "roc_auc_ovr"
    metric_keys = ("accuracy", "f1_macro", "roc_auc_ovr")
    greater_is_better = True

    def encode(self, raw, names, separator):
        found = names_of(raw, None)
        if not found:
            raise BadLabel("missing label")
        if len(found) > 1:
            raise BadLabel(f"{len(found)} labels for a single-label task")
        return position(names, found[0])

    def strata(self, labels):
        classes = np.asarray(labels, dtype=np.int64)
        return np.eye(int(classes.max()) + 1)[classes]

    def label_text(self, value, labels):
        return labels[int(value)]

    def frequencies(self, values, labels):
        counts = np.bincount(values.astype(np.int64), minlength=len(labels))
        return {name: int(count) for name, count in zip(labels, counts)}

    def batch_labels(self, values, label_range=None):
        import torch

        return torch.as_tensor(np.asarray(values), dtype=torch.long)

    def loss(self, logits, labels, regression_loss="mse", pos_weight=None, multi_label_loss=None):
        return cross_entropy(logits, labels)

    def soft_targets(self, labels, n_outputs, smoothing=0.0):
        import torch.nn.functional as F

        return F.one_hot(labels.long(), n_outputs).float() * (1.0 - smoothing) + smoothing / n_outputs

    def scores(self, logits, config=None):
        from scipy.special import softmax

        return softmax(np.asarray(logits, dtype=np.float64), axis=1)

    def metrics(self, y_true, scores, labels, thresholds=0.5):
        """Accuracy, macro F1 and one-vs-rest AUC (macro over the classes present in the split)."""
        from sklearn.metrics import accuracy_score, f1_score

        y_true = np.asarray(y_true, dtype=np.int64)
        probs = np.asarray(scores, dtype=np.float64)
        predictions = probs.argmax(axis=1)
        class_ids = list(range(len(labels)))
        f1s = f1_score(y_true, predictions, labels=class_ids, average=None, zero_division=0)
        per_label = {}
        for k, name in enumerate(labels):
            is_k = (y_true == k).astype(int)
            per_label[name] = {"roc_auc": binary_auc(is_k, probs[:, k]), "f1": float(f1s[k]), "support": int(is_k.sum())}
        present = [k for k in class_ids if (y_true == k).any()]
        metrics = {
            "accuracy": float(accuracy_score(y_true, predictions)),
            "f1_macro": float(np.mean([f1s[k] for k in present])) if present else None,
            "roc_auc_ovr": mean_of_known([per_label[labels[k]]["roc_auc"] for k in present]),
        }
        return MetricsResult(metrics, per_label)

    def bootstrap_replicates(self, y_true, scores, labels, point, counts, thresholds):
        """Per-class one-vs-rest AUC, ``roc_auc_ovr`` and ``accuracy``."""
        targets = self.indicator(y_true, scores.shape[1])
        replicates = auc_replicates(counts, targets, scores, labels, point, self.macro_auc)
        correct = (scores.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
        drawn = counts.sum(axis=1)  # n for the whole split; fewer or more for a subgroup's columns of it
        with np.errstate(invalid="ignore", divide="ignore"):
            replicates.metrics["accuracy"] = np.where(drawn > 0, counts @ correct / drawn, np.nan)
        return replicates

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
        probabilities = {name: float(p) for name, p in zip(labels, scores)}
        return {"file": file, **probabilities, "predicted": labels[best], "probability": float(scores[best])}


SINGLE_LABEL = SingleLabel()
