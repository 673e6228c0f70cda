"""Plot helpers: the PNG is written, and what is drawn is the data given (curves, AUCs, counts)."""

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

import vitune.evaluation.plots as plots
from vitune.evaluation.plots import (
    plot_confusion,
    plot_loss,
    plot_lr,
    plot_precision_recall,
    plot_predicted_vs_true,
    plot_roc,
)
from vitune.tasks import MULTI_LABEL, REGRESSION, SINGLE_LABEL

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures the plot functions save, in order (they are still written to disk)."""
    figures = []
    save = plots._save

    def keep(fig, out):
        figures.append(fig)
        return save(fig, out)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def png_size(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC
    return Image.open(path).size


def legend(fig) -> list[str]:
    return [text.get_text() for text in fig.axes[0].get_legend().get_texts()]


def test_loss_and_lr_plots_draw_the_logged_values(tmp_path, drawn):
    steps = np.arange(1, 11)
    path = plot_loss(steps, 1 / steps, tmp_path / "p" / "loss.png", [5, 10], [0.3, 0.2])
    assert png_size(path) == (660, 440)  # 6 x 4 inches at 110 dpi
    train, validation = drawn[0].axes[0].get_lines()
    np.testing.assert_allclose(train.get_ydata(), 1 / steps)
    assert list(validation.get_xdata()) == [5, 10] and list(validation.get_ydata()) == [0.3, 0.2]
    plot_lr(steps, np.linspace(0, 2e-4, 10), tmp_path / "lr.png")
    np.testing.assert_allclose(drawn[1].axes[0].get_lines()[0].get_ydata(), np.linspace(0, 2e-4, 10))


def test_roc_skips_single_class_labels_and_handles_many(tmp_path, drawn):
    rng = np.random.default_rng(0)
    y = (rng.random((40, 3)) < 0.5).astype(float)
    y[:, 2] = 0  # one class only: no curve, no crash
    scores = np.clip(y + rng.normal(0, 0.4, y.shape), 0, 1)
    assert png_size(plot_roc(y, scores, ["a", "b", "c"], tmp_path / "roc.png")) == (660, 660)
    micro = roc_auc_score(y.ravel(), scores.ravel())
    assert legend(drawn[0]) == [f"a (AUC {roc_auc_score(y[:, 0], scores[:, 0]):.3f})",
                                f"b (AUC {roc_auc_score(y[:, 1], scores[:, 1]):.3f})", f"micro-average (AUC {micro:.3f})"]
    many = np.eye(30)[rng.integers(0, 30, 200)]
    many_scores = rng.random((200, 30))
    plot_roc(many, many_scores, [str(i) for i in range(30)], tmp_path / "roc30.png")
    assert legend(drawn[1]) == [f"micro-average (AUC {roc_auc_score(many.ravel(), many_scores.ravel()):.3f})"]


def test_confusion_plot_shows_row_rates_and_counts(tmp_path, drawn):
    y_true, y_pred = [0, 1, 2, 2, 1], [0, 1, 1, 2, 1]
    plot_confusion(y_true, y_pred, ["x", "y", "z"], tmp_path / "cm.png")
    counts = confusion_matrix(y_true, y_pred)
    ax = drawn[0].axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), counts / counts.sum(axis=1, keepdims=True))
    assert [t.get_text() for t in ax.texts] == [str(c) for c in counts.ravel()]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "z"]
    plot_confusion(list(range(25)), list(range(25)), [str(i) for i in range(25)], tmp_path / "cm25.png")
    assert len(drawn[1].axes[0].texts) == 0 and np.array_equal(drawn[1].axes[0].images[0].get_array(), np.eye(25))


def test_precision_recall_skips_labels_without_positives_and_scatter(tmp_path, drawn):
    rng = np.random.default_rng(1)
    y = (rng.random((50, 2)) < 0.3).astype(float)
    y[:, 1] = 0
    scores = rng.random((50, 2))
    plot_precision_recall(y, scores, ["a", "b"], tmp_path / "pr.png")
    assert legend(drawn[0]) == [f"a (AP {average_precision_score(y[:, 0], scores[:, 0]):.3f})",
                                f"micro-average (AP {average_precision_score(y.ravel(), scores.ravel()):.3f})"]
    path = plot_predicted_vs_true(np.arange(20.0), np.arange(20.0) + 1, tmp_path / "s" / "scatter.png")
    assert png_size(path) == (660, 660)
    np.testing.assert_array_equal(drawn[1].axes[0].collections[0].get_offsets(),
                                  np.stack([np.arange(20.0), np.arange(20.0) + 1], axis=1))


def test_plot_task_draws_what_each_task_has(tmp_path):
    rng = np.random.default_rng(2)
    multi = plots.plot_task(MULTI_LABEL, (rng.random((30, 2)) < 0.5).astype(float), rng.random((30, 2)), ["a", "b"],
                            tmp_path / "m", "test")
    assert sorted(multi) == ["pr", "roc"] and multi["roc"] == tmp_path / "m" / "roc.png"
    probs = rng.dirichlet(np.ones(3), 30)
    single = plots.plot_task(SINGLE_LABEL, np.arange(30) % 3, probs, ["x", "y", "z"], tmp_path / "s", "test",
                             kinds=("roc", "confusion"))
    assert sorted(single) == ["confusion", "roc"] and not (tmp_path / "s" / "pr.png").exists()
    regression = plots.plot_task(REGRESSION, np.arange(5.0), np.arange(5.0), ["score"], tmp_path / "r", "test")
    assert list(regression) == ["scatter"] and regression["scatter"].is_file()
