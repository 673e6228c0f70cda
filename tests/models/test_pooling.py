"""`vitune train --pooling mean`: the head MAE and EVA-X fine-tune with, through every command that loads a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from conftest import TINY_SIZE, write_dataset_dir
from PIL import Image
from tiny_run import make_tiny_run

from vitune.config import TrainConfig
from vitune.data.dataset_dir import DatasetInfo
from vitune.errors import UserError
from vitune.models.aliases import load_classifier, register_vitune_models
from vitune.models.families import BEIT, CLS, MEAN, VIT, VIT_MEAN_POOL, family_of, pooled_classifier
from vitune.models.run import load_run
from vitune.training.model_card import model_card

LABELS = ["a", "b", "c"]


def test_the_mean_pooled_head_reads_the_patch_tokens_mean_after_a_layernorm(tiny_vit):
    model = load_classifier(str(tiny_vit), "multi_label", LABELS, pooling="mean").eval()
    encoder = transformers.ViTModel.from_pretrained(tiny_vit, add_pooling_layer=False).state_dict()
    weights = model.vit.state_dict()
    assert family_of(model.config) is VIT_MEAN_POOL and model.config.num_labels == 3
    assert set(encoder) - set(weights) == {"layernorm.weight", "layernorm.bias"}  # the pooled mean is normalised
    assert all(torch.equal(weights[name], encoder[name]) for name in weights if name in encoder)
    pixels = torch.randn(2, 3, TINY_SIZE, TINY_SIZE)
    with torch.no_grad():
        torch.nn.init.normal_(model.vit.pooler.layernorm.weight)  # not the identity: the test would not see it
        output = model(pixel_values=pixels, output_hidden_states=True)
        tokens = output.hidden_states[-1]  # the last block's tokens, [CLS] first
        norm = model.vit.pooler.layernorm
        expected = model.classifier(torch.nn.functional.layer_norm(
            tokens[:, 1:].mean(dim=1), norm.normalized_shape, norm.weight, norm.bias, norm.eps))
    assert output.logits == pytest.approx(expected, abs=1e-5)


def test_which_head_each_family_gets_for_each_pooling():
    register_vitune_models()
    tiny = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    vit, mae = transformers.ViTConfig(**tiny), transformers.ViTMAEConfig(**tiny)
    assert pooled_classifier(vit, None) == (VIT, {}) and pooled_classifier(vit, CLS) == (VIT, {})
    assert pooled_classifier(vit, MEAN) == (VIT_MEAN_POOL, {}) == pooled_classifier(mae, MEAN)
    assert pooled_classifier(transformers.AutoConfig.for_model(VIT_MEAN_POOL.model_type, **tiny), CLS) == (VIT, {})
    assert pooled_classifier(transformers.BeitConfig(**tiny), CLS) == (BEIT, {"use_mean_pooling": False})
    with pytest.raises(UserError, match="--pooling mean: a DINOv2 classifier reads cls\\+mean; mean pooling is for "
                                        "vit, vit_mean_pool, beit, swin, swinv2, vit_mae models"):
        pooled_classifier(transformers.Dinov2Config(**tiny), MEAN)
    with pytest.raises(UserError, match="a Swin classifier reads mean"):
        pooled_classifier(transformers.SwinConfig(), CLS)


def test_the_model_card_says_how_to_load_the_mean_pooled_head(tiny_vit):
    info = DatasetInfo(task="multi_label", labels=LABELS, image_size=TINY_SIZE, format="synthetic", source="tests")
    document = {"metrics": {"roc_auc_macro": 0.7}, "num_samples": 4, "per_label": {}}
    config = TrainConfig(data="data", model=str(tiny_vit), out="runs/mean", pooling="mean")
    mean_pooled = load_classifier(str(tiny_vit), "multi_label", LABELS, pooling="mean").config
    card = model_card(config, info, document, mean_pooled)
    assert "register_auto_classes()" in card and "model_type: vit_mean_pool" in card
    assert "register_auto_classes" not in model_card(config, info, document, transformers.ViTConfig())


@pytest.mark.slow
def test_a_mean_pooled_run_survives_save_load_predict_heads_explain_export_and_serve(tmp_path, tiny_vit):
    from fastapi.testclient import TestClient

    from vitune.config import ExportConfig, HeadsConfig, PredictConfig, ServeConfig
    from vitune.explain.explainer import explain_images
    from vitune.heads.fit import fit_heads
    from vitune.inference.export import export_onnx
    from vitune.inference.predict import predict
    from vitune.serve.app import create_app

    data = write_dataset_dir(tmp_path / "data")
    run_dir = make_tiny_run(tmp_path / "run", tiny_vit, data, pooling="mean")
    image = tmp_path / "image.png"
    # at the model's size: pipeline() and vitune resize differently, not at all here
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)).save(image)

    run = load_run(run_dir, device="cpu")
    assert type(run.model).__name__ == "MeanPooledViTForImageClassification"
    predicted = predict(PredictConfig(run=str(run_dir), inputs=[str(image)]))
    classify = transformers.pipeline("image-classification", model=str(run.dir.model), device="cpu")
    assert type(classify.model) is type(run.model)
    with Image.open(image) as opened:
        piped = classify(opened.convert("RGB"), top_k=None)
    assert {entry["label"]: entry["score"] for entry in piped} == pytest.approx(
        dict(zip(LABELS, predicted.scores[0].tolist())), abs=1e-5)

    heads = fit_heads(HeadsConfig(model=str(run_dir), data=str(data), heads=["logreg", "mlp"]))
    assert heads.heads["mlp"]["metrics"]["roc_auc_macro"] is not None  # the run's own (mean-pooled) classifier
    explained = explain_images(run, [image], labels=["a"])[0]
    assert explained.reason is None and explained.labels["a"].score == pytest.approx(predicted.scores[0][0], abs=1e-5)
    exported = export_onnx(ExportConfig(run=str(run_dir), onnx=str(tmp_path / "model.onnx"), max_samples=8))
    assert exported.max_abs_diff < 1e-4
    with TestClient(create_app(ServeConfig(run=str(run_dir), device="cpu"))) as client:
        answer = client.post("/v1/predict", files={"image": ("image.png", image.read_bytes(), "image/png")}).json()
    assert answer["scores"] == pytest.approx(dict(zip(LABELS, predicted.scores[0].tolist())), abs=1e-5)
