"""Subgroup evaluation and calibration on a generated ChestX-ray14 release with one harder age group."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import save_tiny_vit
from tiny_run import make_tiny_run

from vitune.config import EvaluateConfig, PrepareConfig
from vitune.data.prepare import prepare
from vitune.data.synthetic import make_chestxray_like
from vitune.errors import UserError
from vitune.evaluation.evaluate import evaluate
from vitune.tasks import MULTI_LABEL
from vitune.tasks.subgroups import subgroup_metrics

FAINT = "60-79"


@pytest.fixture(scope="module")
def faint_run(tmp_path_factory):
    """A tiny ViT trained on a release whose 60-79-year-olds' findings are drawn at 15 % contrast."""
    root = tmp_path_factory.mktemp("faint")
    source = make_chestxray_like(root / "src", n_patients=300, image_size=32, faint_ages=(60, 79), seed=1)
    prepare(PrepareConfig(source=str(source), out=root / "ds", image_size=32, workers=2, val_fraction=0.2))
    return make_tiny_run(root / "run", save_tiny_vit(root / "vit", 32), root / "ds", steps=60, batch_size=64)


@pytest.mark.slow
def test_the_faint_age_group_has_a_lower_auc_with_intervals_while_the_sexes_overlap(faint_run):
    result = evaluate(EvaluateConfig(run=str(faint_run), by=["sex", "age"], bootstrap=400))
    ages = result.subgroups["age"]
    assert set(ages) == {"0-39", "40-59", "60-79", "80+"}
    assert sum(entry["n"] for entry in ages.values()) == result.num_samples
    faint_high = ages[FAINT]["roc_auc_macro_ci"][1]
    for name, entry in ages.items():
        if name != FAINT:
            assert entry["roc_auc_macro"] > ages[FAINT]["roc_auc_macro"] + 0.05, (name, ages)
    assert result.subgroup_gaps["age"]["between"][0] == FAINT
    assert faint_high < max(entry["roc_auc_macro"] for entry in ages.values())
    female, male = result.subgroups["sex"]["F"]["roc_auc_macro_ci"], result.subgroups["sex"]["M"]["roc_auc_macro_ci"]
    assert female[0] < male[1] and male[0] < female[1]  # the sexes do not differ: their intervals overlap
    assert result.subgroup_gaps["sex"]["ci"][0] < 0 < result.subgroup_gaps["sex"]["ci"][1]
    document = json.loads(result.path.read_text())
    assert document["subgroups"]["age"][FAINT]["positives"]["Infiltration"] > 0
    assert 0.0 <= document["subgroups"]["sex"]["F"]["tpr_tuned"]["Infiltration"] <= 1.0
    assert (faint_run / document["plots"]["subgroups"]).is_file()
    with pytest.raises(UserError, match="no such metadata column"):
        evaluate(EvaluateConfig(run=str(faint_run), by=["site"]))
    _check_report_in_chromium(faint_run, result)


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOT = "report-subgroups-calibration.png"  # kept beside report.html in the run, as the test's artefact


def _check_report_in_chromium(run_dir, result) -> None:
    """The report's Subgroups and Calibration sections, as chromium renders them, with a screenshot kept."""
    from vitune.config import ReportConfig
    from vitune.evaluation.report import build_report

    report = build_report(ReportConfig(run=str(run_dir)))
    if CHROMIUM is None:
        pytest.skip("no chromium executable found")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(report.resolve().as_uri())
            subgroups = page.locator("#subgroups")
            assert subgroups.locator("img[alt='roc_auc_macro by subgroup']").evaluate("img => img.naturalWidth") > 200
            text = subgroups.inner_text()
            faint = result.subgroups["age"][FAINT]
            assert f"{FAINT}\t{faint['n']}" in text and "Largest gap" in text and "True-positive rate" in text
            calibration = page.locator("#calibration")
            assert calibration.locator("img[alt='Reliability diagram']").evaluate("img => img.naturalWidth") > 200
            assert "ece_macro" in calibration.inner_text()
            subgroups.screenshot(path=str(run_dir / SCREENSHOT))
        finally:
            browser.close()
    assert (run_dir / SCREENSHOT).stat().st_size > 10_000


def test_a_subgroup_too_small_for_an_interval_says_so_and_stays_out_of_the_gap():
    rng = np.random.default_rng(0)
    y = (rng.random((120, 2)) < 0.4).astype(np.float64)
    scores = y * 0.3 + rng.random((120, 2)) * 0.7
    groups = ["big"] * 60 + ["other"] * 55 + ["tiny"] * 5
    per_value, gap = subgroup_metrics(MULTI_LABEL, y, scores, ["a", "b"], groups, 300, 0)
    assert per_value["tiny"]["roc_auc_macro_ci"] is None and "too small" in per_value["tiny"]["note"]
    assert per_value["big"]["n"] == 60 and per_value["big"]["positives"]["a"] == int(y[:60, 0].sum())
    low, high = per_value["big"]["roc_auc_macro_ci"]
    assert low < per_value["big"]["roc_auc_macro"] < high
    assert sorted(gap["between"]) == ["big", "other"]
    expected = abs(per_value["big"]["roc_auc_macro"] - per_value["other"]["roc_auc_macro"])
    assert gap["roc_auc_macro"] == pytest.approx(expected)


def _binned_ece(outcome: np.ndarray, probability: np.ndarray, bins: int = 15) -> float:
    """ECE written out plainly, bin by bin, to check the vectorised one against."""
    total = 0.0
    for index in range(bins):
        low, high = index / bins, (index + 1) / bins
        inside = (probability >= low) & ((probability < high) if index < bins - 1 else (probability <= high))
        if inside.any():
            total += inside.sum() / len(probability) * abs(outcome[inside].mean() - probability[inside].mean())
    return total


@pytest.mark.slow
def test_reported_ece_matches_predicts_probabilities_and_temperature_does_not_raise_validation_ece(faint_run):
    from vitune.config import PredictConfig
    from vitune.data.dataset_dir import load_dataset_dir
    from vitune.evaluation.evaluate import split_logits
    from vitune.inference.predict import predict
    from vitune.models.run import load_run
    from vitune.storage.layout import RunDir
    from vitune.tasks.calibration import fitted_calibration

    run = load_run(faint_run, "cpu", calibrate=False)
    ds, info = load_dataset_dir(RunDir(faint_run).dataset_dir())
    y_val, logits = split_logits(run, ds["validation"], 64)
    fitted = fitted_calibration(run.task, logits, y_val, run.labels)
    assert fitted["ece_macro_after"] <= fitted["ece_macro_before"] + 1e-9
    assert len(fitted["temperature"]) == len(run.labels)
    RunDir(faint_run).save_temperature(fitted.pop("temperature"), fitted)
    try:
        result = evaluate(EvaluateConfig(run=str(faint_run), bootstrap=50))
        calibration = result.calibration
        assert calibration["bins"] == 15 and len(calibration["temperature"]) == len(run.labels)
        test = ds["test"]
        source = info.source
        predicted = predict(PredictConfig(run=str(faint_run), inputs=[f"{source}/{file}" for file in test["file"]]))
        order = {name.rsplit("/", 1)[-1]: row for row, name in enumerate(predicted.files)}
        probabilities = predicted.scores[[order[file.rsplit("/", 1)[-1]] for file in test["file"]]]
        y_test = np.asarray(test["labels"], dtype=np.float64)
        scored = [j for j, name in enumerate(run.labels) if result.per_label[name]["roc_auc"] is not None]
        recomputed = np.mean([_binned_ece(y_test[:, j], probabilities[:, j]) for j in scored])
        assert calibration["ece_macro"] == pytest.approx(recomputed, abs=0.005)
        uncalibrated = evaluate(EvaluateConfig(run=str(faint_run), bootstrap=50, no_calibrate=True)).calibration
        assert uncalibrated["temperature"] is None
        assert uncalibrated["ece_macro"] == pytest.approx(calibration["ece_macro_uncalibrated"])
        assert (faint_run / result.plots["reliability"]).is_file()
    finally:
        RunDir(faint_run).calibration.unlink()
