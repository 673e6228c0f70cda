"""Unknown multi-label targets (NaN: missing, or uncertain under --uncertain ignore) are masked per label:
in the loss, the metrics, the bootstrap, the thresholds, the plots, the heads, and a CheXpert-style run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from chexpert_like import FINDINGS, write_chexpert_like
from heads_support import informative, install_fake_cuml
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from vitune.config import EvaluateConfig, HeadsConfig, PrepareConfig, TrainConfig
from vitune.data import prepare
from vitune.evaluation.evaluate import bootstrap_intervals, evaluate, resample_counts, tune_thresholds
from vitune.heads import LogRegHead, MLPHead, SVMHead, fit_heads
from vitune.heads.svm import _NystroemRidgeSolver
from vitune.tasks.core import get_task
from vitune.tasks.metrics import compute_metrics
from vitune.training.fine_tune import auto_pos_weight, train

MULTI = get_task("multi_label")


def with_unknowns(y: np.ndarray, share: float = 0.3, seed: int = 1) -> np.ndarray:
    """``y`` with a ``share`` of its cells set to NaN."""
    y = np.asarray(y, dtype=np.float64).copy()
    y[np.random.default_rng(seed).random(y.shape) < share] = np.nan
    return y


def test_the_loss_averages_the_known_cells_and_gives_unknown_ones_no_gradient():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor(with_unknowns((np.random.default_rng(0).random((6, 3)) < 0.5).astype(float)),
                          dtype=torch.float32)
    known = ~torch.isnan(labels)
    pos_weight = torch.tensor([1.0, 3.0, 0.5])
    loss = MULTI.loss(logits, labels, pos_weight=pos_weight)
    cells = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(labels), pos_weight=pos_weight, reduction="none")
    assert loss.item() == pytest.approx(cells[known].mean().item(), rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[~known] == 0) and torch.all(logits.grad[known] != 0)
    full = torch.nan_to_num(labels)
    assert MULTI.loss(logits, full).item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, full).item())


def test_pos_weight_counts_known_cells_only():
    class Split:
        def with_format(self, *args, **kwargs):
            return {"labels": np.array([[1, 0], [0, np.nan], [np.nan, 1], [0, 0]], dtype=np.float32)}

    assert auto_pos_weight(Split()).tolist() == [2.0, 2.0]


def test_per_label_metrics_are_computed_on_the_known_rows():
    x, y = informative("multi_label", 200)
    scores = 1 / (1 + np.exp(-x[:, :3]))
    y_unknown = with_unknowns(y)
    result = compute_metrics("multi_label", y_unknown, scores, ["a", "b", "c"])
    for j, name in enumerate("abc"):
        known = ~np.isnan(y_unknown[:, j])
        assert result.per_label[name]["roc_auc"] == pytest.approx(roc_auc_score(y[known, j], scores[known, j]))
        assert result.per_label[name]["support"] == known.sum() and result.per_label[name]["unknown"] == (~known).sum()
    assert result.metrics["roc_auc_macro"] == pytest.approx(np.mean([result.per_label[n]["roc_auc"] for n in "abc"]))


def test_bootstrap_resamples_score_each_label_on_its_known_rows():
    x, y = informative("multi_label", 120)
    scores = 1 / (1 + np.exp(-x[:, :3]))
    y_unknown = with_unknowns(y)
    result = bootstrap_intervals("multi_label", y_unknown, scores, ["a", "b", "c"], n_bootstrap=200, seed=3)
    known = ~np.isnan(y_unknown[:, 1])
    manual = []
    for counts in resample_counts(len(y), 200, 3):
        for row in counts:
            weights, target = row[known], y[known, 1]
            if weights[target > 0.5].sum() and weights[target <= 0.5].sum():
                manual.append(roc_auc_score(target, scores[known, 1], sample_weight=weights))
    assert result["per_label"]["b"] == pytest.approx(np.percentile(manual, [2.5, 97.5]).tolist(), abs=1e-9)
    low, high = result["metrics"]["roc_auc_macro"]
    assert low < compute_metrics("multi_label", y_unknown, scores, list("abc")).metrics["roc_auc_macro"] < high


def test_thresholds_are_tuned_on_the_known_rows():
    x, y = informative("multi_label", 150)
    scores = 1 / (1 + np.exp(-x[:, :3]))
    y_unknown = with_unknowns(y)
    tuned, _ = tune_thresholds(y_unknown, scores, list("abc"))
    for j in range(3):
        known = ~np.isnan(y_unknown[:, j])
        alone, _ = tune_thresholds(y[known][:, [j]], scores[known][:, [j]], ["x"])
        assert tuned[j] == alone[0]


def test_logreg_fits_each_label_on_its_known_rows():
    x, y = informative("multi_label", 200)
    y_unknown = with_unknowns(y)
    head = LogRegHead("multi_label").fit(x, y_unknown)
    xs = StandardScaler().fit_transform(x.astype(np.float64))
    for j in range(3):
        known = ~np.isnan(y_unknown[:, j])
        reference = LogisticRegression(C=1.0, max_iter=1000).fit(xs[known], y[known, j])
        np.testing.assert_allclose(head.coef_[j], reference.coef_[0], rtol=1e-4, atol=1e-6)


def test_the_cpu_svm_solves_each_label_on_its_known_rows():
    x, y = informative("multi_label", 150)
    t = 2 * with_unknowns(y) - 1
    t[:, 2] = 2 * y[:, 2] - 1  # one label fully known: grouped with nothing else
    solver = _NystroemRidgeSolver(x.astype(np.float32), t, gamma=0.05, n_components=64, seed=0)
    rows = np.arange(20, 150)
    coef, intercept = solver._ridge(rows, C=2.0)
    for j in range(3):
        known = rows[~np.isnan(t[rows, j])]
        reference = Ridge(alpha=1 / 4.0).fit(solver.features[known], t[known, j])
        np.testing.assert_allclose(coef[j], reference.coef_, rtol=1e-6, atol=1e-8)
        assert intercept[j] == pytest.approx(reference.intercept_)


def test_the_gpu_svm_path_fits_each_label_on_its_known_rows(monkeypatch):
    from sklearn.svm import SVC

    install_fake_cuml(monkeypatch)
    x, y = informative("multi_label", 90)
    y_unknown = with_unknowns(y)
    head = SVMHead("multi_label", C=2.0, backend="cuml").fit(x, y_unknown)
    xs = StandardScaler().fit_transform(x).astype(np.float32)
    for j in range(3):
        known = ~np.isnan(y_unknown[:, j])
        reference = SVC(kernel="rbf", C=2.0, gamma=head.gamma_).fit(xs[known], y[known, j]).decision_function(xs)
        np.testing.assert_allclose(head.decision_function(x)[:, j], reference, atol=1e-3)


@pytest.mark.parametrize("head", [SVMHead("multi_label", C=None), MLPHead("multi_label", max_steps=200)])
def test_heads_learn_from_partly_unknown_targets(head):
    x, y = informative("multi_label", 300)
    head.fit(x[:200], with_unknowns(y[:200], share=0.4))
    auc = compute_metrics("multi_label", y[200:], head.predict_scores(x[200:]), list("abc")).metrics["roc_auc_macro"]
    assert auc > 0.85


@pytest.mark.slow
def test_a_chexpert_style_csv_prepares_trains_evaluates_and_fits_heads(tiny_vit, tmp_path):
    csv_path = write_chexpert_like(tmp_path / "chexpert", patients=30)
    data = tmp_path / "ds"
    info = prepare(PrepareConfig(source=csv_path, out=data, image_size=32, group_column="Patient", workers=1))
    assert info.labels == FINDINGS and info.label_states["uncertain"] == "ignore"
    run = tmp_path / "run"
    result = train(TrainConfig(data=str(data), model=str(tiny_vit), out=str(run), epochs=2, batch_size=8,
                               lr=3e-3, pos_weight="auto"))
    metrics = result.metrics
    assert all(np.isfinite(h["train_loss"]) for h in metrics["history"] if h.get("train_loss") is not None)
    known = sum(v["support"] for v in metrics["per_label"].values())
    unknown = sum(v["unknown"] for v in metrics["per_label"].values())
    assert unknown > 0 and known + unknown == 3 * metrics["num_samples"]
    assert metrics["metrics"]["roc_auc_macro"] is not None
    test = evaluate(EvaluateConfig(run=run, bootstrap=50)).to_json()
    assert test["metrics"]["roc_auc_macro"] is not None and sum(v["unknown"] for v in test["per_label"].values()) > 0
    heads = fit_heads(HeadsConfig(model=str(run), data=str(data), heads="svm,logreg")).to_json()
    assert all(h["metrics"]["roc_auc_macro"] is not None for h in heads["heads"].values())
    assert json.loads((data / "dataset.json").read_text())["label_states"]["counts"]["Edema"]["missing"] > 0
