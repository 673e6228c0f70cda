"""Plot helpers write real PNGs from arrays."""

import numpy as np

from vitune.plots import plot_confusion, plot_loss, plot_lr, plot_precision_recall, plot_predicted_vs_true, plot_roc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 2000


def test_loss_and_lr_plots(tmp_path):
    steps = np.arange(1, 11)
    assert _is_png(plot_loss(steps, 1 / steps, tmp_path / "p" / "loss.png", [5, 10], [0.3, 0.2]))
    assert _is_png(plot_lr(steps, np.linspace(0, 2e-4, 10), tmp_path / "lr.png"))


def test_roc_skips_single_class_labels_and_handles_many(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random((40, 3)) < 0.5).astype(float)
    y[:, 2] = 0  # one class only: no curve, no crash
    scores = np.clip(y + rng.normal(0, 0.4, y.shape), 0, 1)
    assert _is_png(plot_roc(y, scores, ["a", "b", "c"], tmp_path / "roc.png"))
    many = np.eye(30)[rng.integers(0, 30, 200)]
    assert _is_png(plot_roc(many, rng.random((200, 30)), [str(i) for i in range(30)], tmp_path / "roc30.png"))


def test_confusion_plot(tmp_path):
    y_true = [0, 1, 2, 2, 1]
    assert _is_png(plot_confusion(y_true, [0, 1, 1, 2, 1], ["x", "y", "z"], tmp_path / "cm.png"))
    assert _is_png(plot_confusion(list(range(25)), list(range(25)), [str(i) for i in range(25)], tmp_path / "cm25.png"))


def test_precision_recall_skips_labels_without_positives_and_scatter(tmp_path):
    rng = np.random.default_rng(1)
    y = (rng.random((50, 2)) < 0.3).astype(float)
    y[:, 1] = 0
    assert _is_png(plot_precision_recall(y, rng.random((50, 2)), ["a", "b"], tmp_path / "pr.png"))
    assert _is_png(plot_predicted_vs_true(np.arange(20.0), np.arange(20.0) + 1, tmp_path / "s" / "scatter.png"))
