"""`--tta none|flip|crops`: the views, their average of calibrated probabilities, and TTA over torch, ONNX and heads."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import write_dataset_dir
from PIL import Image
from scipy.special import expit
from tiny_run import run_cli, tiny_run_copy

from vitune.config import EvaluateConfig, HeadsConfig, PredictConfig
from vitune.data.dataset_dir import load_dataset_dir
from vitune.errors import UserError
from vitune.evaluation.evaluate import evaluate
from vitune.evaluation.report import metrics_section
from vitune.heads import fit_heads, heads_scorer
from vitune.inference.predict import make_scorer, predict
from vitune.inference.tta import TestTimeAugmentation, resized_side
from vitune.models.run import load_run
from vitune.serve.service import ServedModel
from vitune.storage.layout import RunDir
from vitune.tasks import get_task
from vitune.tasks.calibration import probability_logits

TEMPERATURE = [2.0, 0.5, 1.5]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_vit):
    """A tiny multi-label run with a fitted temperature, so every path below is a calibrated one."""
    run = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path_factory.mktemp("tta") / "run")
    RunDir(run).save_temperature(TEMPERATURE, {"fitted_on": "validation"})
    return run


@pytest.fixture(scope="module")
def pixels(run_dir):
    ds, _ = load_dataset_dir(RunDir(run_dir).read_config()["data"])
    return np.asarray(ds["validation"].with_format("numpy")[:6]["pixel_values"])


def mirrored(pixels: np.ndarray) -> np.ndarray:
    """The images with their right half replaced by their left half's mirror: horizontally symmetric."""
    half = pixels.shape[-1] // 2
    symmetric = pixels.copy()
    symmetric[..., half:] = pixels[..., :half][..., ::-1]
    return symmetric


def test_none_gives_exactly_the_untouched_calibrated_scores(run_dir, pixels):
    run = load_run(run_dir, "cpu")
    untouched = expit(run.logits([pixels]) / np.asarray(TEMPERATURE))
    none = make_scorer(run_dir, device="cpu", tta="none")
    assert none.tta == "none" and np.array_equal(none.scores(pixels), untouched)
    augmentation = TestTimeAugmentation("none")
    assert augmentation.views(pixels) is pixels and augmentation.n_views == 1


def test_flip_averages_the_mirrored_view_and_a_symmetric_image_keeps_its_scores(run_dir, pixels):
    none = make_scorer(run_dir, device="cpu").scores
    flip = make_scorer(run_dir, device="cpu", tta="flip").scores
    symmetric = mirrored(pixels)
    np.testing.assert_allclose(flip(symmetric), none(symmetric), atol=1e-6, rtol=0)
    by_hand = (none(pixels) + none(pixels[..., ::-1].copy())) / 2  # the mean of calibrated probabilities
    np.testing.assert_allclose(flip(pixels), by_hand, atol=1e-6, rtol=0)
    assert np.abs(flip(pixels) - none(pixels)).max() > 1e-4  # asymmetric images: the mirror changes the scores


def test_five_crops_are_the_corners_and_centre_of_the_enlarged_image():
    side = 32
    quadrants = np.zeros((1, 1, side, side), dtype=np.uint8)
    quadrants[..., :16, :16], quadrants[..., :16, 16:] = 10, 60
    quadrants[..., 16:, :16], quadrants[..., 16:, 16:] = 110, 160
    views = TestTimeAugmentation("crops").views(np.repeat(quadrants, 2, axis=0))
    assert views.shape == (12, 1, side, side) and views.dtype == np.uint8
    assert resized_side(side) == 37 and resized_side(224) == 256
    np.testing.assert_array_equal(views[:2], np.repeat(quadrants, 2, axis=0))  # the original view first
    top_left, top_right, bottom_left, bottom_right, centre = (views[2 * k] for k in range(1, 6))
    # each corner crop keeps its own corner of the image, and reaches past the middle (37 - 32 = 5 pixels cut)
    assert (top_left[0, 0, 0], top_right[0, 0, -1], bottom_left[0, -1, 0], bottom_right[0, -1, -1]) == (10, 60, 110, 160)
    assert (top_left[0, :16, :16] == 10).all() and top_left[0, -1, -1] == 160
    assert (bottom_right[0, -16:, -16:] == 160).all() and bottom_right[0, 0, 0] == 10
    # the centre crop is centred: its middle is the image's middle and its corners are the four quadrants
    assert (centre[0, 0, 0], centre[0, 0, -1], centre[0, -1, 0], centre[0, -1, -1]) == (10, 60, 110, 160)
    assert (centre[0, :14, :14] == 10).all() and (centre[0, 18:, 18:] == 160).all()


def test_tta_on_the_onnx_backend_equals_torch_and_the_export_bakes_the_temperature(run_dir, tmp_path, monkeypatch,
                                                                                  capsys):
    rng = np.random.default_rng(3)
    for index in range(5):
        Image.fromarray(rng.integers(0, 255, (34, 30 + index, 3), dtype=np.uint8)).save(tmp_path / f"img{index}.png")
    by_backend = {backend: predict(PredictConfig(run=run_dir, inputs=[str(tmp_path)], backend=backend, tta="crops",
                                                 device="cpu" if backend == "torch" else None, batch_size=3))
                  for backend in ("torch", "onnx")}
    assert np.abs(by_backend["onnx"].scores - by_backend["torch"].scores).max() < 1e-4
    plain = predict(PredictConfig(run=run_dir, inputs=[str(tmp_path)], device="cpu"))
    assert np.abs(by_backend["torch"].scores - plain.scores).max() > 1e-4
    assert [row["tta"] for row in by_backend["onnx"].rows] == ["crops"] * 5 and "tta" not in plain.rows[0]

    graph = tmp_path / "exported" / "model.onnx"
    code, out, err = run_cli(monkeypatch, capsys, "export", run_dir, "--onnx", graph)
    assert code == 0 and "divided by the temperature fitted on validation (2, 0.5, 1.5)" in out, err
    metadata = {entry.key: entry.value for entry in onnx.load(str(graph)).metadata_props}
    assert json.loads(metadata["vitune_temperature"]) == TEMPERATURE
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    inputs = {"pixel_values": np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)}
    calibrated, uncalibrated = session.run(["logits", "logits_uncalibrated"], inputs)
    np.testing.assert_allclose(calibrated, uncalibrated / np.asarray(TEMPERATURE), atol=1e-5, rtol=1e-5)


def test_evaluate_records_the_tta_and_scores_with_the_averaged_views(run_dir, pixels, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", run_dir, "--split", "validation", "--tta", "flip",
                           "--bootstrap", "20", "--device", "cpu")
    assert code == 0, err
    document = json.loads(RunDir(run_dir).eval_metrics("validation").read_text())
    assert document["tta"] == "flip" and document["num_samples"] == 24
    ds, _ = load_dataset_dir(RunDir(run_dir).read_config()["data"])
    validation = ds["validation"].with_format("numpy")
    scores = make_scorer(run_dir, device="cpu", tta="flip").scores(np.asarray(validation["pixel_values"]))
    expected = get_task("multi_label").metrics(np.asarray(validation["labels"]), scores, ["a", "b", "c"])
    assert document["metrics"]["roc_auc_macro"] == pytest.approx(expected.metrics["roc_auc_macro"], abs=1e-9)
    assert "Scores averaged over test-time augmented views (--tta flip)." in metrics_section(Path(run_dir), None,
                                                                                          [document])
    plain = evaluate(EvaluateConfig(run=run_dir, split="validation", bootstrap=20, device="cpu"))
    assert json.loads(plain.path.read_text())["tta"] == "none"
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", run_dir, "--tta", "mirror")
    assert code == 2 and err == "error: --tta 'mirror' is not supported: use one of none, flip, crops\n"
    with pytest.raises(UserError):
        TestTimeAugmentation("rotate")


def _binary_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean binary cross-entropy of ``logits / temperature`` (written here, not taken from the code under test)."""
    scaled = logits / temperature
    return float(np.mean(np.logaddexp(0.0, scaled) - labels * scaled))


def test_heads_get_a_temperature_and_tta_averages_their_calibrated_probabilities(run_dir, pixels, tmp_path):
    out = tmp_path / "heads"
    # the run's labels and image size, with a validation split large enough for a stable ECE
    data = write_dataset_dir(tmp_path / "data", sizes={"train": 60, "validation": 200}, seed=4)
    report = fit_heads(HeadsConfig(model=run_dir, data=str(data), out=str(out), heads=["logreg", "svm"])).to_json()
    saved = json.loads((out / "heads-config.json").read_text())["heads"]
    validation = load_dataset_dir(data)[0]["validation"].with_format("numpy")
    validation_pixels, validation_labels = np.asarray(validation["pixel_values"]), np.asarray(validation["labels"])
    for name in ("logreg", "svm"):
        calibration = report["heads"][name]["calibration"]
        assert saved[name]["temperature"] == calibration["temperature"] and len(calibration["temperature"]) == 3
        assert 0.0 <= calibration["ece_macro_after"] <= 1.0 and 0.0 <= calibration["ece_macro_before"] <= 1.0
        # what the fit guarantees on validation is a lower NLL than no temperature (ECE usually follows, not always)
        raw = heads_scorer(out, name, model=load_run(run_dir, "cpu"), calibrate=False)(validation_pixels)
        logits = probability_logits(get_task("multi_label"), raw)
        for label, temperature in enumerate(calibration["temperature"]):
            z, y = logits[:, label], validation_labels[:, label]
            assert _binary_nll(z, y, temperature) <= _binary_nll(z, y, 1.0) + 1e-12
    calibrated = make_scorer(run_dir, "svm", heads_dir=out, device="cpu").scores
    raw = heads_scorer(out, "svm", model=load_run(run_dir, "cpu"), calibrate=False)(pixels)
    temperature = np.asarray(saved["svm"]["temperature"])
    by_hand = expit(np.log(raw / (1 - raw)) / temperature)  # temperature scaling of the head's own probabilities
    np.testing.assert_allclose(calibrated(pixels), by_hand, atol=1e-9, rtol=0)
    flip = make_scorer(run_dir, "svm", heads_dir=out, device="cpu", tta="flip").scores
    np.testing.assert_allclose(flip(pixels), (calibrated(pixels) + calibrated(pixels[..., ::-1].copy())) / 2,
                               atol=1e-6, rtol=0)
    uncalibrated = fit_heads(HeadsConfig(model=run_dir, data=str(data), out=str(tmp_path / "plain"), heads=["logreg"],
                                         no_calibrate=True))
    assert "calibration" not in uncalibrated.heads["logreg"]
    assert "temperature" not in json.loads((tmp_path / "plain" / "heads-config.json").read_text())["heads"]["logreg"]


def test_serve_answers_name_the_tta_they_averaged_over(run_dir, pixels):
    scorer = make_scorer(run_dir, device="cpu", tta="crops")
    served = ServedModel(scorer, max_batch=4, name="run", head="model")
    body = served.prediction("scan.png", scorer.scores(pixels[:1])[0]).response()
    assert body["tta"] == "crops" and list(body) == ["file", "scores", "predicted", "tta"]
