"""Plots shared by training, evaluation and heads: plain functions of arrays and an output path.

Every function writes one PNG (parent folders created) and returns its path. matplotlib runs on
the non-interactive Agg backend, so plots work on headless machines and in worker processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from vitune.storage.atomic import atomic_file

MAX_ROC_CURVES = 15  # beyond this a legend is unreadable: the micro-average curve stands for all
MAX_ANNOTATED_CLASSES = 20


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path | str) -> Path:
    out = Path(out)
    fig.tight_layout()
    with atomic_file(out) as handle:
        fig.savefig(handle, format=out.suffix.lstrip("."), dpi=110)
    _pyplot().close(fig)
    return out


def plot_loss(
    steps: Sequence[float],
    losses: Sequence[float],
    out: Path | str,
    eval_steps: Sequence[float] = (),
    eval_losses: Sequence[float] = (),
) -> Path:
    """Training loss per logged step, with evaluation loss points when given."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, losses, label="train", color="tab:blue")
    if len(eval_steps):
        ax.plot(eval_steps, eval_losses, "o-", label="validation", color="tab:orange")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out)


def plot_lr(steps: Sequence[float], lrs: Sequence[float], out: Path | str) -> Path:
    """Learning-rate schedule per logged step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, lrs, color="tab:green")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_roc(
    y_true: np.ndarray,
    scores: np.ndarray,
    labels: Sequence[str],
    out: Path | str,
    title: str = "ROC",
) -> Path:
    """One-vs-rest ROC curves of ``[N, K]`` binary targets vs scores (labels with one class are skipped).

    Single-label callers pass one-hot targets and class probabilities. With more than
    ``MAX_ROC_CURVES`` labels only the micro-average curve is drawn. Unknown (NaN) targets are left
    out, per label.
    """
    from sklearn.metrics import auc, roc_curve

    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(scores), -1)
    scores = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    known = ~np.isnan(y_true)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    if len(labels) <= MAX_ROC_CURVES:
        for j, name in enumerate(labels):
            y, score = y_true[known[:, j], j], scores[known[:, j], j]
            if len(np.unique(y)) < 2:
                continue
            fpr, tpr, _ = roc_curve(y, score)
            ax.plot(fpr, tpr, lw=1.2, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    if len(np.unique(y_true[known])) == 2:
        fpr, tpr, _ = roc_curve(y_true[known], scores[known])
        ax.plot(fpr, tpr, "k--", lw=2, label=f"micro-average (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    _unit_square(ax, "false positive rate", "true positive rate", title, "lower right")
    return _save(fig, out)


def plot_precision_recall(
    y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str], out: Path | str, title: str = "Precision-recall"
) -> Path:
    """One-vs-rest precision-recall curves of ``[N, K]`` binary targets (labels without positives skipped;
    unknown, NaN, targets left out per label)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    targets = np.asarray(y_true, dtype=np.float64).reshape(len(scores), -1)
    known, y_true = ~np.isnan(targets), targets > 0.5
    scores = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    if len(labels) <= MAX_ROC_CURVES:
        for j, name in enumerate(labels):
            y, score = y_true[known[:, j], j], scores[known[:, j], j]
            if not y.any():
                continue
            precision, recall, _ = precision_recall_curve(y, score)
            ap = average_precision_score(y, score)
            ax.step(recall, precision, where="post", lw=1.2, label=f"{name} (AP {ap:.3f})")
    if y_true.any():
        precision, recall, _ = precision_recall_curve(y_true[known], scores[known])
        ap = average_precision_score(y_true[known], scores[known])
        ax.step(recall, precision, "k--", where="post", lw=2, label=f"micro-average (AP {ap:.3f})")
    _unit_square(ax, "recall", "precision", title, "lower left")
    return _save(fig, out)


def _unit_square(ax, xlabel: str, ylabel: str, title: str, legend_loc: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, loc=legend_loc)


def plot_predicted_vs_true(y_true: np.ndarray, preds: np.ndarray, out: Path | str, title: str = "Predicted vs true") -> Path:
    """Regression scatter of predictions against targets, with the identity line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(y_true, preds, s=10, alpha=0.6)
    low, high = float(min(np.min(y_true), np.min(preds))), float(max(np.max(y_true), np.max(preds)))
    ax.plot([low, high], [low, high], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(title)
    return _save(fig, out)


def plot_confusion(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    labels: Sequence[str],
    out: Path | str,
    title: str = "Confusion matrix",
) -> Path:
    """Row-normalised confusion matrix (true class per row); counts are annotated for few classes."""
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(y_true, y_pred, labels=list(range(len(labels))))
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    plt = _pyplot()
    side = min(4 + 0.35 * len(labels), 16)
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if len(labels) <= MAX_ANNOTATED_CLASSES:
        ticks = np.arange(len(labels))
        ax.set_xticks(ticks, labels, rotation=45, ha="right")
        ax.set_yticks(ticks, labels)
        for i, j in np.ndindex(counts.shape):
            colour = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, out)


TASK_PLOTS = ("roc", "pr", "confusion", "scatter")


def plot_task(task, y_true, scores, labels: Sequence[str], out_dir: Path | str, split: str,
              kinds: Sequence[str] = TASK_PLOTS) -> dict[str, Path]:
    """The plots of one split that fit ``task`` (a :class:`vitune.tasks.base.Task`), among ``kinds``.

    Classification: ``roc.png`` and ``pr.png`` (one-vs-rest for single-label) and, for one class per
    image, ``confusion.png``; regression: ``scatter.png``. Returns ``{kind: path}`` of those written.
    """
    out_dir = Path(out_dir)
    if not task.is_classification:
        if "scatter" not in kinds:
            return {}
        return {"scatter": plot_predicted_vs_true(y_true, scores, out_dir / "scatter.png", f"Predicted vs true ({split})")}
    scores = np.asarray(scores, dtype=np.float64)
    targets = task.indicator(y_true, scores.shape[1])
    makers = {
        "roc": lambda: plot_roc(targets, scores, labels, out_dir / "roc.png", title=f"ROC ({split})"),
        "pr": lambda: plot_precision_recall(targets, scores, labels, out_dir / "pr.png",
                                            title=f"Precision-recall ({split})"),
    }
    if not task.multi_output:
        makers["confusion"] = lambda: plot_confusion(np.asarray(y_true, dtype=np.int64), scores.argmax(axis=1), labels,
                                                     out_dir / "confusion.png", title=f"Confusion matrix ({split})")
    return {kind: make() for kind, make in makers.items() if kind in kinds}


def plot_trials(trials: Sequence[dict], metric: str, maximize: bool, out: Path | str) -> Path:
    """A search's objective per trial (``{"number", "value", "state"}``), finished ones with the best so far."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    finished = [t for t in trials if t["state"] == "complete" and t["value"] is not None]
    if finished:
        numbers, values = [t["number"] for t in finished], [t["value"] for t in finished]
        best = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
        ax.plot(numbers, values, "o", color="tab:blue", label="finished")
        ax.step(numbers, best, where="post", color="tab:orange", label="best so far")
    stopped = [t["number"] for t in trials if t["state"] != "complete"]
    for number in stopped:
        ax.axvline(number, color="tab:gray", alpha=0.3)
    if stopped:
        ax.plot([], [], color="tab:gray", alpha=0.3, label="pruned or failed")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"Search ({'higher' if maximize else 'lower'} is better)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out)


def plot_reliability(curves: dict[str, dict], out: Path | str) -> Path:
    """Reliability diagram: per label, each bin's observed frequency against its mean predicted probability.

    ``curves`` is :func:`vitune.tasks.calibration.reliability_curve` per label; a perfectly calibrated
    model lies on the diagonal. Marker area follows the bin's row count.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="calibrated")
    for name, curve in list(curves.items())[:MAX_ROC_CURVES]:
        counts = np.asarray(curve["count"], dtype=np.float64)
        sizes = 12 + 120 * counts / max(counts.max(initial=1.0), 1.0)
        ax.plot(curve["confidence"], curve["frequency"], lw=1, alpha=0.7)
        ax.scatter(curve["confidence"], curve["frequency"], s=sizes, alpha=0.7, label=name)
    _unit_square(ax, "mean predicted probability", "observed frequency", "Reliability", "upper left")
    return _save(fig, out)


def plot_subgroups(subgroups: dict[str, dict], metric: str, out: Path | str) -> Path:
    """Forest plot: each attribute's values with their metric and 95 % interval (no bar: too small for one)."""
    plt = _pyplot()
    rows = [(column, value, entry) for column, values in subgroups.items() for value, entry in values.items()]
    fig, ax = plt.subplots(figsize=(6.5, 0.9 + 0.38 * len(rows)))
    for position, (column, value, entry) in enumerate(rows):
        if entry[metric] is None:
            continue
        interval = entry[metric + "_ci"]
        if interval is not None:
            ax.plot(interval, [position, position], color="tab:blue", lw=2)
        ax.plot(entry[metric], position, "o", color="tab:blue" if interval is not None else "tab:grey")
    ax.set_yticks(range(len(rows)), [f"{column}: {value} (n={entry['n']})" for column, value, entry in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} (95% bootstrap interval)")
    ax.set_title("Subgroups")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, out)


RECONSTRUCTION_COLUMNS = ("original", "masked input", "reconstruction")


def plot_reconstructions(originals: np.ndarray, masked: np.ndarray, reconstructions: np.ndarray, out: Path | str,
                         title: str = "Masked-autoencoder reconstructions") -> Path:
    """One row per image: the original, what the encoder saw (masked patches grey) and the reconstruction.

    Each array is ``[N, H, W, 3]`` floats in [0, 1]; the reconstruction shows the visible patches as they
    were and the masked ones as the decoder predicted them (as the MAE paper's figures do).
    """
    plt = _pyplot()
    rows = len(originals)
    fig, axes = plt.subplots(rows, len(RECONSTRUCTION_COLUMNS), figsize=(6, 2 * rows), squeeze=False)
    for row, images in enumerate(zip(originals, masked, reconstructions)):
        for column, image in enumerate(images):
            axes[row, column].imshow(np.clip(image, 0.0, 1.0))
            axes[row, column].axis("off")
    for column, name in enumerate(RECONSTRUCTION_COLUMNS):
        axes[0, column].set_title(name)
    fig.suptitle(title)
    return _save(fig, out)
