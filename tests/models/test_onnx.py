"""The heads' embedding pass on ``--backend onnx|onnx-int8``: the exported encoder equals torch, is made once,
redone for changed weights, and `vitune heads` / `vitune predict --head` run on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file
from tiny_run import tiny_run_copy

from vitune.config import HeadsConfig, PredictConfig
from vitune.heads import fit_heads
from vitune.inference.predict import predict
from vitune.models.encoder import Encoder
from vitune.models.onnx import RECORD_FILE, encoder_graph, file_digest
from vitune.models.run import load_run
from vitune.storage.layout import RunDir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_vit):
    return tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path_factory.mktemp("onnx") / "run")


PIXELS = np.random.default_rng(3).integers(0, 256, (7, 3, 32, 32), dtype=np.uint8)


def test_the_encoder_graph_gives_torchs_embeddings_and_logits_and_is_redone_for_new_weights(run_dir):
    run = load_run(run_dir, "cpu")
    folder = RunDir(run_dir).encoder_export("mean")
    graph = encoder_graph(run, "mean", "onnx", folder)
    embeddings, logits = graph.encode(PIXELS)
    torch_embeddings, torch_logits = run.encode(PIXELS, "mean")
    assert embeddings.shape == (7, 32) and np.abs(embeddings - torch_embeddings).max() < 1e-4
    assert np.abs(logits - torch_logits).max() < 1e-4
    record = json.loads((folder / RECORD_FILE).read_text())
    assert record["outputs"] == ["embeddings", "logits"] and record["pooling"] == "mean"
    assert graph.session.digest == record["files"]["onnx"]["sha256"] == file_digest(folder / "model.onnx")
    int8 = encoder_graph(run, "mean", "onnx-int8", folder)
    assert (folder / "model.onnx").stat().st_mtime_ns == graph.session.path.stat().st_mtime_ns  # reused
    quantized = int8.encode(PIXELS)[0]
    assert np.abs(quantized - torch_embeddings).max() > 0  # int8 weights move the embeddings a little
    assert np.corrcoef(quantized.ravel(), torch_embeddings.ravel())[0, 1] > 0.95

    weights_path = RunDir(run_dir).model / "model.safetensors"
    weights = load_file(weights_path)
    name = next(key for key in weights if key.endswith("layernorm.bias"))
    weights[name] = weights[name] + 0.5
    save_file(weights, weights_path, metadata={"format": "pt"})
    changed = load_run(run_dir, "cpu")
    redone = encoder_graph(changed, "mean", "onnx", folder)
    assert redone.session.digest != graph.session.digest
    assert np.abs(redone.encode(PIXELS)[0] - changed.encode(PIXELS, "mean")[0]).max() < 1e-4


def test_a_checkpoints_encoder_has_no_logits(tiny_vit, tmp_path):
    encoder = Encoder(tiny_vit, device="cpu")
    embeddings, logits = encoder_graph(encoder, "cls", "onnx", tmp_path / "export").encode(PIXELS)
    assert logits is None and np.abs(embeddings - encoder.encode(PIXELS, "cls")[0]).max() < 1e-4


def test_heads_and_predict_with_a_head_run_on_the_onnx_encoder(tiny_vit, tmp_path_factory, tmp_path):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    data = RunDir(run_dir).dataset_dir()
    on_torch = fit_heads(HeadsConfig(model=str(run_dir), data=str(data), out=str(tmp_path / "torch"), heads=["logreg"]))
    on_onnx = fit_heads(HeadsConfig(model=str(run_dir), data=str(data), out=str(tmp_path / "onnx"), heads=["logreg"],
                                    backend="onnx"))
    assert on_onnx.embedding["backend"] == "onnx" and RunDir(run_dir).encoder_export("cls").is_dir()
    assert on_onnx.heads["logreg"]["metrics"]["roc_auc_macro"] == pytest.approx(
        on_torch.heads["logreg"]["metrics"]["roc_auc_macro"], abs=1e-3)

    for index, pixels in enumerate(PIXELS[:3]):
        Image.fromarray(pixels.transpose(1, 2, 0)).save(tmp_path / f"{index}.png")
    inputs = [str(tmp_path / f"{index}.png") for index in range(3)]
    settings = dict(run=run_dir, inputs=inputs, head="logreg", heads_dir=tmp_path / "onnx")
    scores_torch = predict(PredictConfig(**settings, device="cpu")).scores
    scores_onnx = predict(PredictConfig(**settings, backend="onnx")).scores
    np.testing.assert_allclose(scores_onnx, scores_torch, atol=1e-4)


def test_the_export_checks_scale_the_difference_by_the_largest_value_at_least_one():
    from vitune.models.onnx import scaled_difference

    reference = np.array([[6.0, -2.0], [0.5, 1.0]])
    assert scaled_difference(reference + [[3e-4, 0.0], [0.0, 0.0]], reference) == pytest.approx(5e-5)
    small = np.array([0.5, -0.25])
    assert scaled_difference(small + [2e-4, 0.0], small) == pytest.approx(2e-4)  # below 1: the absolute difference
