"""`vitune evaluate`: metric values, bootstrap intervals, validation-tuned thresholds, plots."""

import json

import numpy as np
import pytest
import torch
from heads_support import informative, with_unknowns
from tiny_run import run_cli, tiny_run_copy

from vitune.config import EvaluateConfig
from vitune.data.dataset_dir import load_dataset_dir
from vitune.errors import UserError
from vitune.evaluation.evaluate import evaluate, f1_optimal_threshold, tune_thresholds
from vitune.models.forward import normalize
from vitune.models.run import load_run
from vitune.storage.layout import RunDir
from vitune.tasks import compute_metrics, get_task


def direct_scores(run_dir, dataset_dir, split):
    """Scores computed straight from the saved model, bypassing vitune.evaluation.evaluate."""
    run = load_run(run_dir, "cpu")
    ds, _ = load_dataset_dir(dataset_dir)
    part = ds[split].with_format("numpy")
    with torch.no_grad():
        logits = run.model(pixel_values=normalize(torch.from_numpy(np.array(part["pixel_values"])), run.prep)).logits
    return np.asarray(part["labels"]), get_task(run.task).scores(logits.numpy(), run.model.config)


def test_f1_optimal_threshold():
    y = np.array([0, 0, 1, 1])
    threshold, f1 = f1_optimal_threshold(y, np.array([0.1, 0.4, 0.35, 0.8]))
    assert threshold == pytest.approx(0.35) and f1 == pytest.approx(0.8)
    assert f1_optimal_threshold(np.zeros(4), np.array([0.1, 0.4, 0.35, 0.8])) is None
    thresholds, f1s = tune_thresholds(np.array([[0, 1], [0, 0]]), np.array([[0.2, 0.9], [0.3, 0.1]]), ["a", "b"])
    assert thresholds.tolist() == [0.5, pytest.approx(0.9)] and f1s == {"a": None, "b": 1.0}


def test_evaluate_multi_label(tmp_path, tmp_path_factory, tiny_vit):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    result = evaluate(EvaluateConfig(run=run_dir, bootstrap=300, seed=0)).to_json()
    data = RunDir(run_dir).dataset_dir()
    y_test, s_test = direct_scores(run_dir, data, "test")
    y_val, s_val = direct_scores(run_dir, data, "validation")
    labels = ["a", "b", "c"]

    assert result["split"] == "test" and result["num_samples"] == 24
    expected = compute_metrics("multi_label", y_test, s_test, labels).metrics
    for key, value in expected.items():
        assert result["metrics"][key] == pytest.approx(value, abs=1e-5)
    for key, (low, high) in result["confidence_intervals"].items():
        assert low <= result["metrics"][key] <= high
    for name in labels:
        low, high = result["per_label"][name]["roc_auc_ci"]
        assert low <= result["per_label"][name]["roc_auc"] <= high

    saved = json.loads((run_dir / "thresholds.json").read_text())
    tuned, _ = tune_thresholds(y_val, s_val, labels)  # tuned on validation, not on test
    assert [saved["thresholds"][n] for n in labels] == pytest.approx(tuned.tolist(), abs=1e-6)
    assert all(0.0 <= t <= 1.0 for t in saved["thresholds"].values()) and saved["tuned_on"] == "validation"
    at_tuned = compute_metrics("multi_label", y_test, s_test, labels, tuned).metrics["f1_macro"]
    assert result["metrics"]["f1_macro_tuned"] == pytest.approx(at_tuned, abs=1e-5)

    out = run_dir / "eval" / "test"
    assert json.loads((out / "metrics_test.json").read_text())["metrics"] == result["metrics"]
    assert (out / "roc.png").stat().st_size > 1000 and (out / "pr.png").stat().st_size > 1000


def test_evaluate_single_label_without_test_split_uses_validation(tmp_path, tmp_path_factory, tiny_vit):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "single_label", tmp_path / "run",
                            sizes={"train": 48, "validation": 30})
    result = evaluate(EvaluateConfig(run=run_dir, bootstrap=200)).to_json()
    assert result["split"] == "validation" and "no test split" in result["note"]
    low, high = result["confidence_intervals"]["accuracy"]
    assert low <= result["metrics"]["accuracy"] <= high
    assert (run_dir / "eval" / "validation" / "confusion.png").is_file()
    assert not (run_dir / "thresholds.json").exists()  # single-label decides by argmax


def test_evaluate_rejects_a_dataset_with_other_labels(tmp_path, tmp_path_factory, tiny_vit, dataset_dir_factory):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    other = dataset_dir_factory(task="multi_label", labels=["x", "y", "z"])
    with pytest.raises(UserError, match="labels"):
        evaluate(EvaluateConfig(run=run_dir, data=other, bootstrap=10))
    with pytest.raises(UserError, match="no 'train2' split"):
        evaluate(EvaluateConfig(run=run_dir, split="train2", bootstrap=10))


def test_cli_evaluate(tmp_path, tmp_path_factory, tiny_vit, monkeypatch, capsys):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    code, out, _ = run_cli(monkeypatch, capsys, "evaluate", run_dir, "--bootstrap", "100")
    assert code == 0 and "roc_auc_macro" in out and "95% CI" in out and "thresholds.json" in out
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", tmp_path / "missing")
    assert code == 2 and err.strip().count("\n") == 0 and "does not exist" in err


def test_zero_batch_size_is_a_user_error(tmp_path):
    from vitune.errors import UserError

    with pytest.raises(UserError, match="--batch-size must be at least 1"):
        evaluate(EvaluateConfig(run=tmp_path / "run", batch_size=0))


def test_thresholds_are_tuned_on_the_known_rows():
    x, y = informative("multi_label", 150)
    scores = 1 / (1 + np.exp(-x[:, :3]))
    y_unknown = with_unknowns(y)
    tuned, _ = tune_thresholds(y_unknown, scores, list("abc"))
    for j in range(3):
        known = ~np.isnan(y_unknown[:, j])
        alone, _ = tune_thresholds(y[known][:, [j]], scores[known][:, [j]], ["x"])
        assert tuned[j] == alone[0]
