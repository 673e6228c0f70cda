"""`vitune train --folds K` end to end on the tiny ViT (one 3-fold run shared by the module), and the folds' ensemble
in evaluate, predict and report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import write_patient_dataset_dir
from tiny_run import run_cli

from vitune.config import EvaluateConfig, PredictConfig, ReportConfig, TrainConfig
from vitune.data.dataset_dir import load_dataset_dir
from vitune.data.folds import files_digest, load_run_dataset
from vitune.errors import UserError
from vitune.evaluation.evaluate import evaluate, split_scores, tune_thresholds
from vitune.evaluation.report import build_report
from vitune.inference.predict import predict
from vitune.models.folds import FoldEnsemble, load_scoring_run
from vitune.models.run import load_run
from vitune.storage.layout import RunDir
from vitune.tasks import compute_metrics
from vitune.training.cross_validation import cross_validate, fold_config

FOLDS = 3
PATIENTS = {"train": 14, "validation": 6, "test": 5}  # 3 images each: 60 pooled images of 20 patients, 15 test images


def settings(data, tiny_vit, out, **overrides) -> TrainConfig:
    """One short epoch per fold."""
    return TrainConfig(data=str(data), model=str(tiny_vit), out=str(out), folds=FOLDS, epochs=1, batch_size=16,
                       lr=1e-3, **overrides)


@pytest.fixture(scope="module")
def cross_validation(tmp_path_factory, tiny_vit):
    """A finished 3-fold cross-validation: (its config, its result)."""
    root = tmp_path_factory.mktemp("cv")
    data = write_patient_dataset_dir(root / "data", PATIENTS)
    config = settings(data, tiny_vit, root / "cv")
    return config, cross_validate(config)


def fold_runs(parent) -> list[RunDir]:
    return [RunDir(path) for path in RunDir(parent).folds()]


@pytest.mark.slow
def test_three_folds_are_three_runs_with_no_patient_validated_twice_and_no_test_image(cross_validation):
    config, result = cross_validation
    runs = fold_runs(result.run_dir)
    assert [run.root.name for run in runs] == ["fold-0", "fold-1", "fold-2"]
    test_files = set(load_dataset_dir(config.data)[0]["test"]["file"])
    validated_patients, validated_files = [], []
    for index, run in enumerate(runs):
        saved = run.read_config()
        assert (saved["folds"], saved["fold"], saved["out"]) == (FOLDS, index, str(run.root))
        ds, _ = load_run_dataset(saved["data"], saved)  # the fold's data, as its run saw it
        train_files, validation_files = list(ds["train"]["file"]), list(ds["validation"]["file"])
        assert not test_files & set(train_files + validation_files)
        assert not set(ds["train"]["group"]) & set(ds["validation"]["group"])
        metrics = json.loads(run.metrics.read_text())
        assert metrics["num_samples"] == len(validation_files) == result.document["folds"][index]["validation"]
        assert metrics["fold"] == {"fold": index, "folds": FOLDS, "seed": 0,
                                   "validation_files_sha256": files_digest(ds["validation"])}
        validated_patients += sorted(set(ds["validation"]["group"]))
        validated_files += validation_files
    assert len(validated_patients) == len(set(validated_patients)) == 20  # each patient in one fold's validation
    assert len(validated_files) == len(set(validated_files)) == 60
    assert RunDir(result.run_dir).read_config()["folds"] == FOLDS and RunDir(result.run_dir).read_config()["fold"] is None


@pytest.mark.slow
def test_cv_json_has_each_fold_s_validation_metrics_and_numpy_s_mean_and_std(cross_validation):
    _, result = cross_validation
    document = json.loads(RunDir(result.run_dir).cv.read_text())
    assert document == result.document
    folds = [json.loads(run.metrics.read_text())["metrics"] for run in fold_runs(result.run_dir)]
    assert [entry["fold"] for entry in document["folds"]] == [0, 1, 2]
    assert [entry["metrics"] for entry in document["folds"]] == folds
    assert set(document["mean"]) == {"roc_auc_macro", "average_precision_macro", "f1_macro"}
    for name in document["mean"]:
        values = [metrics[name] for metrics in folds]
        assert document["mean"][name] == pytest.approx(np.mean(values), abs=1e-12)
        assert document["std"][name] == pytest.approx(np.std(values), abs=1e-12)
    assert document["k"] == FOLDS and document["main_metric"] == "roc_auc_macro"


@pytest.mark.slow
def test_the_ensemble_predicts_the_mean_of_the_folds_and_evaluate_reports_it(cross_validation, tmp_path):
    from PIL import Image

    config, result = cross_validation
    test = load_dataset_dir(config.data)[0]["test"].with_format("numpy")
    images = [str(tmp_path / f"{index}.png") for index in range(len(test))]
    for image, pixels in zip(images, test["pixel_values"]):
        Image.fromarray(np.asarray(pixels, dtype=np.uint8).transpose(1, 2, 0)).save(image)
    folds = [load_run(run.root, "cpu") for run in fold_runs(result.run_dir)]
    assert isinstance(load_scoring_run(result.run_dir, "cpu"), FoldEnsemble)
    per_fold = [predict(PredictConfig(run=str(fold.run_dir), inputs=images, device="cpu")).scores for fold in folds]

    evaluated = evaluate(EvaluateConfig(run=str(result.run_dir), bootstrap=20))
    predicted = predict(PredictConfig(run=str(result.run_dir), inputs=images, device="cpu"))
    np.testing.assert_allclose(predicted.scores, np.mean(per_fold, axis=0), atol=1e-6)
    document = json.loads((RunDir(result.run_dir).eval_metrics("test")).read_text())
    assert document["ensemble"]["folds"] == FOLDS and document["split"] == "test" and document["num_samples"] == 15
    expected = compute_metrics("multi_label", test["labels"], predicted.scores, ["a", "b", "c"]).metrics
    assert document["metrics"]["roc_auc_macro"] == pytest.approx(expected["roc_auc_macro"], abs=1e-9)
    assert evaluated.calibration["temperature"] == [fold.temperature for fold in folds]

    tuned = []  # each fold's thresholds on its own held-out fold, then their mean
    for fold in folds:
        validation = load_run_dataset(config.data, fold.dir.read_config())[0]["validation"]
        y_val, scores_val = split_scores(fold, validation, 8)
        tuned.append(tune_thresholds(np.asarray(y_val, dtype=np.float64), scores_val, fold.labels)[0])
    saved = json.loads(RunDir(result.run_dir).thresholds.read_text())
    assert saved["tuned_on"] == "folds' own validation"
    np.testing.assert_allclose(list(saved["thresholds"].values()), np.mean(tuned, axis=0), atol=1e-9)
    assert predicted.thresholds == pytest.approx(list(saved["thresholds"].values()))  # predict decides with them

    page = build_report(ReportConfig(run=str(result.run_dir))).read_text()
    assert "Cross-validation" in page and "validation patients" in page
    assert f"{result.document['mean']['roc_auc_macro']:.4f}" in page


@pytest.mark.slow
def test_the_ensemble_is_not_evaluated_on_the_splits_its_folds_trained_on(cross_validation):
    _, result = cross_validation
    with pytest.raises(UserError, match="trained on train\\+validation: evaluate their ensemble on test"):
        evaluate(EvaluateConfig(run=str(result.run_dir), split="validation", bootstrap=0))


@pytest.mark.slow
def test_resume_keeps_finished_folds_and_finishes_the_others(cross_validation, tmp_path, monkeypatch, capsys):
    config, result = cross_validation
    parent = RunDir(tmp_path / "cv")
    shutil.copytree(result.run_dir, parent.root)
    kept_weights = RunDir(parent.fold(0)).model / "model.safetensors"
    kept_time = kept_weights.stat().st_mtime_ns
    shutil.rmtree(parent.fold(1))  # never begun: starts
    shutil.rmtree(RunDir(parent.fold(2)).model)  # cut short after its last checkpoint: continues from it
    RunDir(parent.fold(2)).metrics.unlink()
    with pytest.raises(UserError, match="already holds a cross-validation .*add --resume"):
        cross_validate(settings(config.data, config.model, parent.root))
    resuming = settings(config.data, config.model, parent.root, resume=True)
    assert [fold_config(resuming, fold).resume for fold in (1, 2)] == [False, True]
    shutil.copytree(result.run_dir / "fold-1", parent.fold(1))  # training it from the start is the fixture's path
    resumed = cross_validate(resuming)
    assert resumed.kept == [0, 1]
    assert kept_weights.stat().st_mtime_ns == kept_time
    assert all(RunDir(path).is_run() for path in parent.folds()) and len(parent.folds()) == FOLDS
    assert [entry["fold"] for entry in resumed.document["folds"]] == [0, 1, 2]
    assert resumed.document["folds"][0]["metrics"] == result.document["folds"][0]["metrics"]
    # the fold resumed from its last checkpoint ends where it had: the best epoch's model, the same metrics
    assert resumed.document["folds"][2]["metrics"] == pytest.approx(result.document["folds"][2]["metrics"])

    code, out, _ = run_cli(monkeypatch, capsys, "train", "--config", parent.config, "--resume")  # all finished
    assert code == 0
    assert "mean ± std" in out and "(folds 0, 1, 2 were finished and kept)" in out
    mean = resumed.document["mean"]["roc_auc_macro"]
    assert f"{mean:.4f} ± {resumed.document['std']['roc_auc_macro']:.4f}" in out


@pytest.mark.parametrize(("flags", "message"), [
    (["--folds", "1"], "error: --folds must be at least 2 (got 1)"),
    (["--folds", "21"], "error: --folds 21 needs at least 21 patients in train+validation, there are 20: "
                        "use --folds 20 or fewer"),
])
def test_a_bad_number_of_folds_is_one_line_and_exit_2(flags, message, tiny_vit, tmp_path, monkeypatch, capsys):
    data = write_patient_dataset_dir(tmp_path / "data", PATIENTS)
    code, _, err = run_cli(monkeypatch, capsys, "train", "--data", data, "--model", tiny_vit, "--out", tmp_path / "cv",
                           *flags)
    assert code == 2
    assert err.strip() == message
    assert not (tmp_path / "cv").exists()


@pytest.mark.slow
def test_serve_answers_with_the_ensemble_and_explain_names_a_fold(cross_validation, tmp_path):
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from vitune.config import ServeConfig
    from vitune.serve.app import create_app

    config, result = cross_validation
    test = load_dataset_dir(config.data)[0]["test"].with_format("numpy")
    uploads = []
    for pixels in test["pixel_values"][:3]:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(pixels, dtype=np.uint8).transpose(1, 2, 0)).save(buffer, format="PNG")
        uploads.append(buffer.getvalue())
    paths = []
    for index, data in enumerate(uploads):
        paths.append(tmp_path / f"{index}.png")
        paths[-1].write_bytes(data)
    expected = predict(PredictConfig(run=str(result.run_dir), inputs=paths, device="cpu"))
    with TestClient(create_app(ServeConfig(run=result.run_dir, device="cpu"))) as client:
        for index, data in enumerate(uploads):
            response = client.post("/v1/predict", files={"image": (f"{index}.png", data, "image/png")})
            assert response.status_code == 200, response.text
            scores = [response.json()["scores"][label] for label in ("a", "b", "c")]
            np.testing.assert_allclose(scores, expected.scores[index], atol=1e-6)
        health = client.get("/healthz").json()
        assert health["labels"] == ["a", "b", "c"] and health["run"] == result.run_dir.name
        refused = client.post("/v1/predict?explain=1", files={"image": ("0.png", uploads[0], "image/png")})
        assert refused.status_code == 422
        assert "cross-validation" in refused.json()["error"] and "fold-0" in refused.json()["error"]
        assert client.get("/").status_code == 200
