"""`--backend torch|onnx|onnx-int8`: ONNX Runtime scores equal torch's, the export is made once and redone when stale."""

import json

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file
from tiny_run import run_cli, tiny_run_copy

from vitune.config import EvaluateConfig, PredictConfig
from vitune.data.inputs import decoded_batches, expand_inputs
from vitune.errors import UserError
from vitune.evaluation.evaluate import evaluate
from vitune.inference.backend import OnnxBackend, TorchBackend, open_backend
from vitune.inference.predict import predict
from vitune.models.onnx import available_cores, file_digest
from vitune.models.ood import fit_run_ood
from vitune.models.run import load_run
from vitune.storage.layout import RunDir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_vit):
    """A tiny run with its out-of-distribution statistics, as `vitune train` leaves one."""
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path_factory.mktemp("backend") / "run")
    run = load_run(run_dir, "cpu")
    fit_run_ood(run, run.dir.dataset_dir()).save(run.dir.ood)
    return run_dir


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    rng = np.random.default_rng(5)
    folder = tmp_path_factory.mktemp("backend-images")
    for index in range(9):
        Image.fromarray(rng.integers(0, 255, (40 + index, 36, 3), dtype=np.uint8)).save(folder / f"img{index}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    return folder


def test_onnx_probabilities_equal_torch_and_int8_stays_close(run_dir, image_folder):
    by_backend = {backend: predict(PredictConfig(run=run_dir, inputs=[str(image_folder)], device="cpu" if backend ==
                                                 "torch" else None, backend=backend, batch_size=4))
                  for backend in ("torch", "onnx", "onnx-int8")}
    torch_scores = by_backend["torch"].scores
    np.testing.assert_allclose(by_backend["onnx"].ood_distances, by_backend["torch"].ood_distances, rtol=1e-4)
    assert [row["ood"] for row in by_backend["onnx"].rows] == [row["ood"] for row in by_backend["torch"].rows]
    assert torch_scores.shape == (9, 3) and by_backend["onnx"].files == by_backend["torch"].files
    assert np.abs(by_backend["onnx"].scores - torch_scores).max() < 1e-4
    int8_gap = np.abs(by_backend["onnx-int8"].scores - torch_scores).max()
    assert 0 < int8_gap < 0.05  # quantised weights move the scores a little, not the decisions' scale
    assert [s.file.endswith("broken.png") for s in by_backend["onnx"].skipped] == [True]


def test_export_is_recorded_reused_and_redone_when_the_weights_change(run_dir):
    run = load_run(run_dir, "cpu")
    first = open_backend(run, "onnx")
    record = json.loads((RunDir(run_dir).export / "export.json").read_text())
    assert isinstance(first, OnnxBackend) and first.digest == record["files"]["onnx"]["sha256"]
    assert file_digest(RunDir(run_dir).export / "model.onnx") == first.digest
    assert first.session.get_session_options().intra_op_num_threads == available_cores()
    exported_at = (RunDir(run_dir).export / "model.onnx").stat().st_mtime_ns

    again = open_backend(load_run(run_dir, "cpu"), "onnx-int8")
    assert (RunDir(run_dir).export / "model.onnx").stat().st_mtime_ns == exported_at  # fresh: not exported again
    assert again.digest == record["files"]["onnx-int8"]["sha256"]

    weights_path = RunDir(run_dir).model / "model.safetensors"
    weights = load_file(weights_path)
    classifier = next(name for name in weights if name.startswith("classifier") and name.endswith("bias"))
    weights[classifier] = weights[classifier] + 1.0
    save_file(weights, weights_path, metadata={"format": "pt"})
    retrained = load_run(run_dir, "cpu")
    redone = open_backend(retrained, "onnx")
    assert redone.digest != first.digest
    pixels = np.random.default_rng(0).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    assert np.abs(redone.logits(pixels) - TorchBackend(retrained).logits(pixels)).max() < 1e-4
    onnx_features, torch_features = redone.logits_and_features(pixels)[1], TorchBackend(retrained).logits_and_features(pixels)[1]
    assert onnx_features.shape == (3, 32) and np.abs(onnx_features - torch_features).max() < 1e-4

    record_path = RunDir(run_dir).export / "export.json"
    record = json.loads(record_path.read_text())
    assert record["outputs"] == ["logits", "logits_uncalibrated", "features"]
    del record["outputs"]  # an export made before the graph gave the classifier's features
    record_path.write_text(json.dumps(record))
    outputs = ["logits", "logits_uncalibrated", "features"]
    assert [output.name for output in open_backend(retrained, "onnx").session.get_outputs()] == outputs
    assert json.loads(record_path.read_text())["outputs"] == outputs


def test_evaluate_gives_torchs_metrics_on_onnx(run_dir):
    on_torch = evaluate(EvaluateConfig(run=run_dir, device="cpu", bootstrap=10, split="validation"))
    on_onnx = evaluate(EvaluateConfig(run=run_dir, backend="onnx", bootstrap=10, split="validation"))
    assert on_onnx.metrics["roc_auc_macro"] == pytest.approx(on_torch.metrics["roc_auc_macro"], abs=1e-6)
    assert on_onnx.thresholds["values"] == pytest.approx(on_torch.thresholds["values"], abs=1e-3)


def test_an_unknown_backend_is_one_clear_refusal(run_dir, image_folder, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "predict", run_dir, image_folder, "--backend", "tensorrt")
    assert code == 2 and "--backend 'tensorrt' is not supported" in err and "Traceback" not in err


def test_prefetched_decoding_keeps_order_and_reasons(image_folder):
    files, skipped = expand_inputs([image_folder])
    eager_skipped, ahead_skipped = [], []
    eager = list(decoded_batches(files, 32, 4, eager_skipped, prefetch=0))
    ahead = list(decoded_batches(files, 32, 4, ahead_skipped, prefetch=3))
    assert [names for names, _ in ahead] == [names for names, _ in eager]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(ahead, eager))
    assert [s.file for s in ahead_skipped] == [str(image_folder / "broken.png")] and not skipped
    assert sum(len(names) for names, _ in ahead) == 9 and ahead[0][1].dtype == np.uint8
