"""Heads: each head x task on informative embeddings, storage round trip, fit_heads end to end, CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from heads_support import informative, install_fake_cuml, with_unknowns
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from vitune.errors import UserError
from vitune.heads import (
    EnsembleHead,
    HeadsConfig,
    LogRegHead,
    MLPHead,
    SVMHead,
    fit_heads,
    load_heads,
    predict_with_heads,
    save_heads,
    split_targets,
)
from vitune.heads.svm import C_GRID, _NystroemRidgeSolver
from vitune.models.aliases import load_classifier, resolve_preprocessing
from vitune.models.embeddings import extract_embeddings
from vitune.models.forward import batched_logits, pixel_batches
from vitune.models.ood import OodStatistics
from vitune.storage.layout import HeadsDir
from vitune.tasks import compute_metrics, get_task

TASKS = ("multi_label", "single_label", "regression")
HEADS = {"svm": lambda task: SVMHead(task), "logreg": lambda task: LogRegHead(task),
         "mlp": lambda task: MLPHead(task, max_steps=200)}
MAIN = {"multi_label": "roc_auc_macro", "single_label": "accuracy", "regression": "r2"}
MAIN_SEARCHED = {"multi_label": "roc_auc_macro", "regression": "rmse"}  # what the C search optimises
FIXTURES_01 = Path(__file__).parent.parent / "fixtures" / "heads-0.1"
# Held-out quality each head must reach on the synthetic embeddings below (two of the three
# multi-label targets are nonlinear, so the linear logreg is expected to trail there).
THRESHOLD = {
    "svm": {"multi_label": 0.9, "single_label": 0.7, "regression": 0.9},
    "mlp": {"multi_label": 0.9, "single_label": 0.7, "regression": 0.9},
    "logreg": {"multi_label": 0.65, "single_label": 0.55, "regression": 0.95},
}


def held_out_metrics(task: str, head, seed: int = 0):
    x, y = informative(task, 300, seed)
    head.fit(x[:200], y[:200])
    scores = head.predict_scores(x[200:])
    labels = ["a", "b", "c"]
    return compute_metrics(task, y[200:], scores, labels).metrics, scores


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_learns_each_task(name, task):
    metrics, scores = held_out_metrics(task, HEADS[name](task))
    assert metrics[MAIN[task]] > THRESHOLD[name][task], metrics
    if task == "multi_label":
        assert scores.shape == (100, 3) and ((scores >= 0) & (scores <= 1)).all()
    elif task == "single_label":
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-9)
    else:
        assert scores.shape == (100,) and 20 < scores.mean() < 80  # target units, not standardised


def test_svm_picks_C_by_cross_validation_and_reports_it():
    x, y = informative("multi_label", 200)
    head = SVMHead("multi_label", C=None).fit(x, y)
    assert head.C_ in (0.1, 1.0, 10.0, 100.0)
    assert head.backend_ == "sklearn" and head.basis_.shape == (200, 16)  # n < n_components: exact kernel
    assert SVMHead("multi_label", C=3.0).fit(x, y).C_ == 3.0


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_cross_validation_picks_the_C_with_the_best_out_of_fold_metric(task):
    """The search redone in the open (same standardisation, kernel, landmarks and folds): C_ is its best."""
    x, y = informative(task, 150, seed=3)
    head = SVMHead(task, C=None).fit(x, y)
    xs = head.scaler_.transform(x).astype(np.float32)
    targets = 2.0 * y - 1.0 if task == "multi_label" else ((y - head.target_mean_) / head.target_scale_)[:, None]
    solver = _NystroemRidgeSolver(xs, targets, head.gamma_, head.n_components, head.random_state)
    folds = head._folds(len(xs))
    scored = {}
    for C in C_GRID:
        d = solver.out_of_fold(folds, C)
        scores = d if task == "multi_label" else d[:, 0] * head.target_scale_ + head.target_mean_
        scored[C] = compute_metrics(task, y, scores, ["a", "b", "c"]).metrics[MAIN_SEARCHED[task]]
    best = max(scored, key=scored.get) if task == "multi_label" else min(scored, key=scored.get)
    assert len(set(scored.values())) == len(C_GRID)  # the grid matters on this data
    assert head.C_ == best, scored


def test_svm_matches_sklearn_svc_ranking():
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x, y = informative("multi_label", 400, seed=1)
    ours = SVMHead("multi_label", C=1.0).fit(x[:300], y[:300]).predict_scores(x[300:])
    xs = StandardScaler().fit(x[:300])
    for j in range(3):
        svc = SVC(kernel="rbf", C=1.0).fit(xs.transform(x[:300]), y[:300, j])
        reference = roc_auc_score(y[300:, j], svc.decision_function(xs.transform(x[300:])))
        assert roc_auc_score(y[300:, j], ours[:, j]) > reference - 0.03


def test_ensemble_is_the_weighted_mean_of_its_members():
    x, y = informative("single_label", 150)
    svm, mlp = SVMHead("single_label").fit(x, y), MLPHead("single_label", max_steps=50).fit(x, y)
    mean = EnsembleHead([("mlp", mlp), ("svm", svm)], prefit=True).fit(x, y).predict_scores(x)
    np.testing.assert_allclose(mean, (svm.predict_scores(x) + mlp.predict_scores(x)) / 2)
    weighted = EnsembleHead([("mlp", mlp), ("svm", svm)], weights=[3, 1], prefit=True).fit(x, y)
    np.testing.assert_allclose(weighted.predict_scores(x), 0.75 * mlp.predict_scores(x) + 0.25 * svm.predict_scores(x))


def test_mlp_is_deterministic():
    x, y = informative("regression", 100)
    a = MLPHead("regression", max_steps=30).fit(x, y).predict_scores(x)
    b = MLPHead("regression", max_steps=30).fit(x, y).predict_scores(x)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("task", TASKS)
def test_save_load_round_trip_gives_identical_scores(tmp_path, task):
    x, y = informative(task, 120)
    heads = {"svm": SVMHead(task).fit(x, y), "logreg": LogRegHead(task).fit(x, y),
             "mlp": MLPHead(task, max_steps=20).fit(x, y)}
    heads["ensemble"] = EnsembleHead([("mlp", heads["mlp"]), ("svm", heads["svm"])], prefit=True).fit(x, y)
    save_heads(tmp_path, heads, {"task": task, "pooling": "cls"})
    loaded = load_heads(tmp_path)
    assert sorted(loaded) == sorted(heads)
    for name, head in heads.items():
        np.testing.assert_array_equal(loaded[name].predict_scores(x), head.predict_scores(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heads-config.json", "heads.safetensors"]


@pytest.mark.parametrize("task", TASKS)
def test_heads_saved_by_vitune_0_1_load_and_predict_the_same(task):
    """Files written by vitune 0.1 (fixtures made with its heads.py) give the scores it gave."""
    folder = FIXTURES_01 / task
    heads = load_heads(folder)
    assert sorted(heads) == ["ensemble", "logreg", "mlp", "svm"]
    probe, expected = np.load(folder / "probe.npy"), np.load(folder / "expected.npz")
    for name, head in heads.items():
        np.testing.assert_allclose(head.predict_scores(probe), expected[name], rtol=1e-9, atol=1e-12)


def test_create_head_builds_each_head_for_its_task():
    from types import SimpleNamespace

    from vitune.heads import RunClassifierHead, create_head, create_heads

    assert isinstance(create_head("svm", "regression", C=2.0), SVMHead) and create_head("svm", "regression", C=2.0).C == 2.0
    assert create_head("logreg", "single_label").C == 1.0 and create_head("logreg", "single_label", C=0.5).C == 0.5
    assert isinstance(create_head("mlp", "multi_label"), MLPHead)
    run_config = SimpleNamespace(vitune_label_range=[1.0, 3.0], vitune_regression_loss="bce")
    run_head = create_head("mlp", "regression", run_config=run_config)
    assert isinstance(run_head, RunClassifierHead) and (run_head.label_range, run_head.regression_loss) == ([1.0, 3.0], "bce")
    heads = create_heads(["ensemble"], "multi_label")
    assert list(heads) == ["svm", "mlp", "ensemble"]
    assert [member for _, member in heads["ensemble"].estimators] == [heads["mlp"], heads["svm"]]
    with pytest.raises(UserError, match="unknown head 'knn'"):
        create_head("knn", "multi_label")


def test_a_torn_pair_of_head_files_is_refused(tmp_path):
    import shutil

    x, y = informative("regression", 60)
    save_heads(tmp_path / "a", {"logreg": LogRegHead("regression").fit(x, y)}, {"task": "regression"})
    save_heads(tmp_path / "b", {"logreg": LogRegHead("regression", C=0.01).fit(x, y)}, {"task": "regression"})
    shutil.copy(tmp_path / "b" / "heads.safetensors", tmp_path / "a" / "heads.safetensors")  # a crash between the two
    with pytest.raises(UserError, match="not saved whole .*run `vitune heads` again"):
        load_heads(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["heads-config.json", "heads.safetensors"]


def test_bad_targets_raise_value_error():
    x, _ = informative("multi_label", 20)
    with pytest.raises(ValueError, match="0/1"):
        SVMHead("multi_label").fit(x, np.full((20, 2), 0.5))
    with pytest.raises(ValueError):
        LogRegHead("single_label").fit(x, np.linspace(0, 1, 20))


def test_cuml_backend_expansion_reproduces_the_gpu_svm(monkeypatch):
    """The cuML path (faked with scikit-learn's SVC) turns per-label SVMs into one exact expansion."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    install_fake_cuml(monkeypatch)
    x, y = informative("multi_label", 90)
    head = SVMHead("multi_label", C=2.0, backend="cuml").fit(x, y)
    assert head.backend_ == "cuml"
    xs = StandardScaler().fit_transform(x).astype(np.float32)
    for j in range(3):
        reference = SVC(kernel="rbf", C=2.0, gamma=head.gamma_).fit(xs, y[:, j]).decision_function(xs)
        np.testing.assert_allclose(head.decision_function(x)[:, j], reference, atol=1e-3)


def test_cuml_backend_requested_without_gpu_is_a_user_error(monkeypatch):
    from vitune.errors import UserError

    monkeypatch.setattr("vitune.heads.svm.cuml_available", lambda: False)
    x, y = informative("regression", 30)
    with pytest.raises(UserError, match="cuML"):
        SVMHead("regression", backend="cuml").fit(x, y)


@parametrize_with_checks(
    [SVMHead("regression"), LogRegHead("single_label"), LogRegHead("regression")],
    expected_failed_checks=lambda est: {
        "check_classifiers_classes": "targets are DATASET_DIR class ids 0..K-1, not arbitrary labels"
    } if est.task == "single_label" else {},
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --------------------------------------------------------------------------- end to end on a tiny ViT


REPORT_KEYS = {"embedding", "heads", "task", "split", "num_samples", "main_metric", "model"}
HEAD_KEYS = {"backend", "fit_seconds", "predict_seconds", "metrics", "per_label"}


def quiet_fit(model, data, out=None, **kwargs):
    return fit_heads(HeadsConfig(model=model, data=data, out=out, **kwargs)).to_json()


def test_fit_heads_multi_label_on_frozen_checkpoint(tiny_vit, dataset_dir_factory, tmp_path):
    data = dataset_dir_factory(task="multi_label")
    out = tmp_path / "heads"
    report = quiet_fit(str(tiny_vit), data, out)
    assert set(report) == REPORT_KEYS and report["split"] == "validation" and report["num_samples"] == 24
    assert set(report["embedding"]) == {"dim", "seconds", "cached", "pooling", "backend"}
    assert report["embedding"]["dim"] == 32 and report["embedding"]["cached"] is False
    assert list(report["heads"]) == ["svm", "logreg", "mlp", "ensemble"]
    for entry in report["heads"].values():
        assert HEAD_KEYS <= set(entry) and set(entry["metrics"]) == {"roc_auc_macro", "average_precision_macro", "f1_macro"}
    assert report["heads"]["svm"]["backend"] == "sklearn" and report["heads"]["mlp"]["backend"] == "torch"
    assert report["heads"]["svm"]["metrics"]["roc_auc_macro"] > 0.75
    assert report["heads"]["logreg"]["metrics"]["roc_auc_macro"] > 0.75
    assert json.loads((out / "heads.json").read_text()) == report
    # Saved heads reproduce the reported metrics from the cached embeddings.
    val = extract_embeddings(str(tiny_vit), data, "validation", cache_dir=out / "embeddings")
    assert val.cached
    loaded = load_heads(out)
    y = split_targets(data, "validation")
    for name, head in loaded.items():
        auc = compute_metrics("multi_label", y, head.predict_scores(val.values), ["a", "b", "c"]).metrics["roc_auc_macro"]
        assert round(auc, 6) == report["heads"][name]["metrics"]["roc_auc_macro"]
    files = {p.suffix for p in out.rglob("*") if p.is_file()}
    assert files <= {".json", ".safetensors", ".npy"}  # no pickle, joblib or torch files
    # The out-of-distribution statistics are those of the embeddings the heads were fitted on.
    train = extract_embeddings(str(tiny_vit), data, "train", cache_dir=out / "embeddings").values.astype(np.float64)
    statistics = OodStatistics.load(HeadsDir(out).ood)
    np.testing.assert_array_equal(statistics.mean, train.mean(axis=0))
    assert statistics.threshold == pytest.approx(np.percentile(statistics.distances(val.values), 99), rel=1e-12)
    assert (statistics.train_rows_used, statistics.feature) == (48, "heads embedding (cls)")
    again = quiet_fit(str(tiny_vit), data, out, heads="svm")
    assert again["embedding"]["cached"] is True and list(again["heads"]) == ["svm"]
    assert again["heads"]["svm"]["metrics"] == report["heads"]["svm"]["metrics"]


@pytest.mark.parametrize("task", ["single_label", "regression"])
def test_fit_heads_on_a_run_uses_its_classifier(tiny_vit, dataset_dir_factory, task):
    import torch
    from transformers import AutoImageProcessor

    data = dataset_dir_factory(task=task)
    labels = ["score"] if task == "regression" else ["a", "b", "c"]
    run = data.parent / f"run-{task}"
    torch.manual_seed(0)
    net = load_classifier(str(tiny_vit), task, labels)
    if task == "regression":
        net.config.vitune_label_range = [0.0, 100.0]
        net.config.vitune_regression_loss = "mse"
    net.save_pretrained(run / "model")
    AutoImageProcessor.from_pretrained(tiny_vit).save_pretrained(run / "model")

    report = quiet_fit(str(run), data, heads="mlp,ensemble,svm", no_calibrate=True)  # the heads' own scores
    assert (run / "heads" / "heads.json").is_file()
    assert report["heads"]["mlp"]["backend"] == "run" and report["heads"]["ensemble"]["backend"] == "run+sklearn"
    # The mlp head is exactly the run's classifier, as vitune.models.forward computes it.
    import datasets

    split = datasets.load_from_disk(str(data))["validation"]
    logits = batched_logits(net, pixel_batches(split, 8), resolve_preprocessing(str(run / "model")))
    y = np.asarray(split.with_format("numpy")["labels"][:])
    expected = compute_metrics(task, y, get_task(task).scores(logits, net.config), labels).metrics
    assert report["heads"]["mlp"]["metrics"] == {k: round(v, 6) if v is not None else None for k, v in expected.items()}
    if task == "regression":
        assert report["main_metric"] == "rmse" and report["heads"]["svm"]["metrics"]["r2"] > 0.0
    # predict_with_heads (what `vitune predict --head` calls) = loaded ensemble on fresh embeddings.
    scores = predict_with_heads(run / "heads", pixel_batches(split, 8), head="ensemble")
    heads = load_heads(run / "heads")
    parts = (heads["mlp"].predict_scores(None, logits) + heads["svm"].predict_scores(
        extract_embeddings(str(run), data, "validation").values)) / 2
    np.testing.assert_allclose(scores, parts, rtol=1e-5, atol=1e-5)


def test_cli_heads_rejects_unknown_head_with_exit_2(tiny_vit, dataset_dir_factory, tmp_path, monkeypatch, capsys):
    from vitune.cli import main

    data = dataset_dir_factory(task="multi_label", sizes={"train": 8, "validation": 8})
    monkeypatch.setattr(sys, "argv", ["vitune", "heads", "--model", str(tiny_vit), "--data", str(data),
                                      "--out", str(tmp_path / "h"), "--heads", "svm,knn"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown head(s) knn: choose from svm,logreg,mlp,ensemble"]
    assert not (tmp_path / "h").exists()


def test_cli_heads_without_out_for_a_checkpoint_is_a_user_error(tiny_vit, dataset_dir_factory, monkeypatch, capsys):
    from vitune.cli import main

    data = dataset_dir_factory(task="regression", sizes={"train": 8, "validation": 8})
    monkeypatch.setattr(sys, "argv", ["vitune", "heads", "--model", str(tiny_vit), "--data", str(data)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2 and "--out" in capsys.readouterr().err


def test_a_second_heads_process_into_the_same_dir_is_refused(tiny_vit, dataset_dir_factory, tmp_path):
    from vitune.storage.lock import OutputLock

    data = dataset_dir_factory(task="multi_label", sizes={"train": 8, "validation": 8})
    with OutputLock(tmp_path / "heads"):
        with pytest.raises(UserError, match="is being written by another vitune process"):
            quiet_fit(str(tiny_vit), data, tmp_path / "heads")
    quiet_fit(str(tiny_vit), data, tmp_path / "heads", heads="logreg")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".heads.")]  # no lock or staging left beside


def test_dataset_at_another_size_than_the_model_is_a_user_error(tiny_vit, dataset_dir_factory, tmp_path):
    data = dataset_dir_factory(task="multi_label", image_size=16)
    with pytest.raises(UserError, match="holds 16px images but .* expects 32px: prepare the data again with `--image-size 32`"):
        quiet_fit(str(tiny_vit), data, tmp_path / "heads")


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


def test_heads_of_a_checkpoint_need_out(tmp_path):
    from vitune.config import HeadsConfig
    from vitune.heads.fit import heads_dir

    with pytest.raises(UserError, match="not-a-run is not a RUN_DIR: give --out DIR"):
        heads_dir(HeadsConfig(model=str(tmp_path / "not-a-run"), data="d"))
    assert heads_dir(HeadsConfig(model="m", data="d", out=str(tmp_path / "h"))) == tmp_path / "h"
