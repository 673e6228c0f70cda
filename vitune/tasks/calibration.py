"""Calibration: expected calibration error, Brier score, reliability curves and temperature scaling.

ECE uses 15 equal-width bins on [0, 1], each bin weighted by its share of the rows (Guo et al.
2017): per label on that label's positive probability for multi-label, on the top label's
probability for single-label. ``ece_macro`` and ``brier_macro`` average the labels whose AUC is
defined on the split, the same labels as the macro AUC. scikit-learn's ``calibration_curve`` drops
empty bins and returns no counts, and torchmetrics' ECE needs torch tensors; the binning here is
a few lines of numpy that both the evaluation and the tests use.

Temperature scaling divides the logits by a temperature fitted on validation by negative
log-likelihood (``scipy.optimize.minimize_scalar`` on log T): one per label for multi-label, one
for single-label. Regression has none.
"""

from __future__ import annotations

import numpy as np

from vitune.tasks.base import Task

BINS = 15
PROBABILITY_FLOOR = 1e-7  # probabilities are clipped to [floor, 1 - floor] before their logit is taken
LOG_T_BOUNDS = (-4.0, 4.0)  # temperatures between e^-4 and e^4
TOP_LABEL = "top label"  # single-label calibration is of the top label's probability


def expected_calibration_error(correct: np.ndarray, confidence: np.ndarray, bins: int = BINS) -> float:
    """Weighted mean over equal-width bins of |accuracy - mean confidence|; NaN for no rows."""
    correct = np.asarray(correct, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64)
    if len(confidence) == 0:
        return float("nan")
    which = np.clip((confidence * bins).astype(np.int64), 0, bins - 1)  # p = 1.0 falls in the last bin
    hits = np.bincount(which, weights=correct, minlength=bins)
    confidences = np.bincount(which, weights=confidence, minlength=bins)
    return float(np.abs(hits - confidences).sum() / len(confidence))


def reliability_curve(correct: np.ndarray, confidence: np.ndarray, bins: int = BINS) -> dict:
    """Per non-empty bin its mean confidence, observed frequency and row count (the reliability diagram)."""
    correct = np.asarray(correct, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64)
    which = np.clip((confidence * bins).astype(np.int64), 0, bins - 1)
    rows = np.bincount(which, minlength=bins)
    filled = rows > 0
    hits = np.bincount(which, weights=correct, minlength=bins)[filled]
    confidences = np.bincount(which, weights=confidence, minlength=bins)[filled]
    return {"confidence": (confidences / rows[filled]).tolist(), "frequency": (hits / rows[filled]).tolist(),
            "count": rows[filled].tolist()}


def label_outcomes(task: Task, y_true, probs: np.ndarray, labels: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What calibration compares, per label (multi-label, known rows) or once (single-label, :data:`TOP_LABEL`):
    ``(outcome 0/1, predicted probability)``."""
    probs = np.asarray(probs, dtype=np.float64)
    if task.multi_output:
        y_true = np.asarray(y_true, dtype=np.float64)
        outcomes = {}
        for j, name in enumerate(labels):
            known = ~np.isnan(y_true[:, j])
            outcomes[name] = (y_true[known, j], probs[known, j])
        return outcomes
    top = probs.argmax(axis=1)
    return {TOP_LABEL: ((top == np.asarray(y_true)).astype(np.float64), probs.max(axis=1))}


def brier_score(task: Task, y_true, probs: np.ndarray, labels: list[str]) -> dict[str, float]:
    """Per label the mean squared error of its probability (multi-label), or the multi-class Brier score
    (single-label, under the one :data:`TOP_LABEL` entry)."""
    probs = np.asarray(probs, dtype=np.float64)
    if task.multi_output:
        return {name: float(np.mean((p - y) ** 2)) for name, (y, p) in label_outcomes(task, y_true, probs, labels).items()}
    onehot = task.indicator(y_true, probs.shape[1])
    return {TOP_LABEL: float(np.mean(((probs - onehot) ** 2).sum(axis=1)))}


def calibration_report(task: Task, y_true, probs: np.ndarray, labels: list[str], scored: list[str]) -> dict:
    """``{"bins", "ece_macro", "brier_macro", "per_label": {label: {"ece", "brier"}}, "curves": {label: ...}}``.

    ``scored``: the labels whose AUC is defined on this split (multi-label macro means average these).
    """
    outcomes = label_outcomes(task, y_true, probs, labels)
    briers = brier_score(task, y_true, probs, labels)
    per_label = {}
    curves = {}
    for name, (outcome, confidence) in outcomes.items():
        per_label[name] = {"ece": expected_calibration_error(outcome, confidence)}
        curves[name] = reliability_curve(outcome, confidence)
    for name, brier in briers.items():
        per_label[name]["brier"] = brier
    averaged = [name for name in outcomes if name in scored] if task.multi_output else list(outcomes)
    return {
        "bins": BINS,
        "ece_macro": _mean([per_label[name]["ece"] for name in averaged]),
        "brier_macro": _mean([briers[name] for name in averaged]),
        "per_label": per_label,
        "curves": curves,
    }


def _mean(values: list[float]) -> float | None:
    finite = [value for value in values if np.isfinite(value)]
    return float(np.mean(finite)) if finite else None


def _binary_nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    scaled = logits / temperature
    return float(np.mean(np.logaddexp(0.0, scaled) - y * scaled))  # BCE with logits, stable


def _softmax_nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    from scipy.special import logsumexp

    scaled = logits / temperature
    return float(np.mean(logsumexp(scaled, axis=1) - scaled[np.arange(len(y)), y]))


def _fit_one(nll) -> float:
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(lambda log_t: nll(float(np.exp(log_t))), bounds=LOG_T_BOUNDS, method="bounded")
    return float(np.exp(found.x))


def fit_temperature(task: Task, logits: np.ndarray, y_true) -> list[float] | None:
    """Temperatures minimising the validation NLL: one per label (multi-label; 1.0 for a label with one
    class or no known row), one for single-label; None for regression."""
    if not task.is_classification:
        return None
    logits = np.asarray(logits, dtype=np.float64)
    if not task.multi_output:
        y = np.asarray(y_true, dtype=np.int64)
        return [_fit_one(lambda t: _softmax_nll(logits, y, t))]
    y_true = np.asarray(y_true, dtype=np.float64)
    temperatures = []
    for j in range(logits.shape[1]):
        known = ~np.isnan(y_true[:, j])
        y, z = y_true[known, j], logits[known, j]
        if len(np.unique(y)) < 2:
            temperatures.append(1.0)
            continue
        temperatures.append(_fit_one(lambda t, z=z, y=y: _binary_nll(z, y, t)))
    return temperatures


def apply_temperature(logits: np.ndarray, temperature: list[float] | None) -> np.ndarray:
    """``logits`` divided by their temperature (one per column, or one for all); unchanged for None."""
    if temperature is None:
        return logits
    return np.asarray(logits, dtype=np.float64) / np.asarray(temperature, dtype=np.float64)


def probability_logits(task: Task, probs: np.ndarray) -> np.ndarray:
    """Logits that the task's scores turn back into ``probs``: ``log(p / (1 - p))`` per label (multi-label,
    the sigmoid's inverse) or ``log p`` (single-label: softmax ignores a constant per row).

    A head whose output is a probability rather than a logit (the SVM's Platt sigmoid, the MLP, an
    ensemble's mean) is calibrated on these: dividing them by a temperature is temperature scaling of
    the head's own probabilities, and for a head that is a sigmoid/softmax of logits (logistic
    regression, the run's classifier) they are those logits again.
    """
    clipped = np.clip(np.asarray(probs, dtype=np.float64), PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
    if task.multi_output:
        return np.log(clipped) - np.log1p(-clipped)
    return np.log(clipped)


def calibrated_probabilities(task: Task, probs: np.ndarray, temperature: list[float] | None) -> np.ndarray:
    """A head's probabilities temperature-scaled through :func:`probability_logits` (unchanged for None)."""
    if temperature is None:
        return probs
    return task.scores(apply_temperature(probability_logits(task, probs), temperature))


def fitted_calibration(task: Task, logits: np.ndarray, y_true, labels: list[str], model_config=None) -> dict | None:
    """Fit the temperature on validation logits and say what it changed there: ``{"temperature", "fitted_on",
    "ece_macro_before", "ece_macro_after"}`` (what ``calibration.json`` holds); None for regression."""
    temperature = fit_temperature(task, logits, y_true)
    if temperature is None:
        return None
    before = task.scores(logits, model_config)
    after = task.scores(apply_temperature(logits, temperature), model_config)
    scored = [name for name, (y, _) in label_outcomes(task, y_true, before, labels).items() if len(np.unique(y)) > 1]
    return {
        "temperature": temperature,
        "fitted_on": "validation",
        "criterion": "nll",
        "ece_macro_before": calibration_report(task, y_true, before, labels, scored)["ece_macro"],
        "ece_macro_after": calibration_report(task, y_true, after, labels, scored)["ece_macro"],
    }
