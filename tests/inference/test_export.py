"""`vitune export`: ONNX parity with torch on a dynamic batch, metadata, int8 quantisation."""

import json

import datasets
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tiny_run import run_cli, tiny_run_copy

import vitune.inference.export
from vitune.config import ExportConfig
from vitune.errors import UserError
from vitune.inference.export import export_onnx
from vitune.models.forward import forward_chunks, normalize
from vitune.models.run import load_run
from vitune.storage.layout import RunDir
from vitune.tasks import compute_metrics


def export(run_dir, onnx_path, **settings):
    return export_onnx(ExportConfig(run=run_dir, onnx=onnx_path, **settings))


@pytest.fixture
def run_dir(tmp_path, tmp_path_factory, tiny_vit):
    return tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")


def test_export_matches_torch_on_any_batch_size(run_dir, tmp_path):
    result = export(run_dir, tmp_path / "model.onnx")
    assert result.max_abs_diff < 1e-4 and result.check_images == 5 and result.quantized is None

    run = load_run(run_dir, "cpu")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        seeded = torch.Generator().manual_seed(batch)
        pixels = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=seeded)
        x = normalize(pixels, run.prep)
        with torch.no_grad():
            expected = run.model(pixel_values=x).logits.numpy()
        got = session.run(["logits"], {"pixel_values": x.numpy()})[0]
        assert got.shape == (batch, 3) and np.abs(got - expected).max() < 1e-4

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert json.loads(meta["vitune_labels"]) == ["a", "b", "c"] and meta["vitune_task"] == "multi_label"
    assert meta["vitune_image_size"] == "32" and json.loads(meta["vitune_mean"]) == [0.5, 0.5, 0.5]


def test_quantized_export_reports_metric_change(run_dir, tmp_path):
    result = export(run_dir, tmp_path / "model.onnx", quantize=True)
    quant = result.quantized
    assert quant["path"] == str(tmp_path / "model.int8.onnx") and quant["size_mb"] < result.size_mb
    assert quant["metric"] == "roc_auc_macro" and quant["split"] == "validation" and quant["samples"] == 24
    # "before" is the float model's validation AUC (= torch's), "after" the int8 file's, recomputed here
    run = load_run(run_dir, "cpu")
    validation = datasets.load_from_disk(str(RunDir(run_dir).dataset_dir()))["validation"].with_format("numpy")
    x = normalize(torch.as_tensor(np.asarray(validation["pixel_values"])), run.prep)
    y = np.asarray(validation["labels"])
    with torch.no_grad():
        torch_auc = compute_metrics("multi_label", y, run.logits_to_scores(run.model(pixel_values=x).logits.numpy()),
                                    run.labels).metrics["roc_auc_macro"]
    # dynamic int8 measures each forward pass's activation range, so the file runs on the same chunks as vitune's
    session = ort.InferenceSession(quant["path"], providers=["CPUExecutionProvider"])
    int8 = np.concatenate([session.run(["logits"], {"pixel_values": chunk})[0] for chunk in forward_chunks(x.numpy())])
    int8_auc = compute_metrics("multi_label", y, run.logits_to_scores(int8), run.labels).metrics["roc_auc_macro"]
    assert quant["before"] == pytest.approx(torch_auc, abs=1e-6) and quant["after"] == pytest.approx(int8_auc, abs=1e-9)
    assert abs(quant["after"] - quant["before"]) < 0.2
    assert 0.0 < quant["max_abs_diff"] < 0.5  # int8 weights change the logits a little, not wholesale
    assert not list(tmp_path.glob(".*prep.onnx"))


def test_export_fails_when_onnxruntime_disagrees(run_dir, tmp_path, monkeypatch):
    real = vitune.inference.export._onnx_logits
    monkeypatch.setattr(vitune.inference.export, "_onnx_logits", lambda *args: real(*args) + 1e-3)
    with pytest.raises(UserError, match="differs from torch"):
        export(run_dir, tmp_path / "model.onnx")


def test_cli_export(run_dir, tmp_path, monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "export", run_dir, "--onnx", tmp_path / "m.onnx")
    assert code == 0 and "max abs diff" in out and (tmp_path / "m.onnx").is_file()
    code, out, err = run_cli(monkeypatch, capsys, "export", tmp_path / "missing", "--onnx", tmp_path / "x.onnx")
    assert code == 2 and "does not exist" in err and err.count("\n") == 1


def test_export_without_the_onnx_extra_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(UserError, match=r"export needs onnxruntime: pip install 'vitune\[onnx\]'"):
        export(tmp_path / "run", tmp_path / "m.onnx")


def test_too_old_opset_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--opset 3 is too old"):
        export(tmp_path / "run", tmp_path / "m.onnx", opset=3)
