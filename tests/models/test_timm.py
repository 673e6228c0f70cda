"""timm checkpoints through TimmWrapper: a tiny local one in the Hub's layout trains, predicts and loads in pipeline()."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file
from tiny_run import run_cli
from transformers.utils import logging as hf_logging

from vitune.config import PredictConfig, TrainConfig
from vitune.data.images import decode_image
from vitune.errors import UserError
from vitune.inference.predict import predict
from vitune.models.aliases import Preprocessing, load_classifier, resolve_preprocessing
from vitune.models.run import load_run
from vitune.training.fine_tune import build_trainer, train

hf_logging.disable_progress_bar()
MEAN, STD = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)
TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.fixture(scope="module")
def tiny_timm(tmp_path_factory):
    """A random 2-block timm ViT saved as timm pushes to the Hub: config.json (pretrained_cfg) + model.safetensors."""
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **TINY_VIT)
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": MEAN, "std": STD}
    path = tmp_path_factory.mktemp("tiny-timm")
    save_for_hf(model, path, model_args=TINY_VIT, safe_serialization=True)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    return path


def test_preprocessing_and_weights_come_from_the_timm_checkpoint(tiny_timm):
    assert resolve_preprocessing(str(tiny_timm)) == Preprocessing(32, MEAN, STD)
    net = load_classifier(str(tiny_timm), "single_label", ["x", "y"])
    saved = load_file(str(tiny_timm / "model.safetensors"))
    assert np.array_equal(net.timm_model.blocks[1].attn.qkv.weight.detach().numpy(), saved["blocks.1.attn.qkv.weight"])
    assert net.timm_model.head.out_features == 2 and net.config.id2label == {0: "x", 1: "y"}


@pytest.mark.slow
def test_timm_run_trains_predicts_and_loads_in_pipeline(tiny_timm, dataset_dir_factory, tmp_path):
    from huggingface_hub import ModelCard
    from transformers import pipeline

    data = dataset_dir_factory(task="single_label", sizes={"train": 16, "validation": 8})
    result = train(TrainConfig(data=str(data), model=str(tiny_timm), out=str(tmp_path / "run"), epochs=1,
                               batch_size=8, lr=1e-3))
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["model_type"] == "timm_wrapper" and saved["label_names"] == ["a", "b", "c"]
    assert (saved["pretrained_cfg"]["crop_mode"], saved["pretrained_cfg"]["crop_pct"]) == ("squash", 1.0)
    assert result.metrics["parameters"]["trainable"] == result.metrics["parameters"]["total"]
    card = ModelCard.load(tmp_path / "run" / "model" / "README.md")  # every run has its card
    assert card.data.eval_results[0].metric_value == result.metrics["metrics"]["accuracy"]
    assert "lora" not in card.data.tags and "single-label" in card.data.tags

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):  # at the model's size: pipeline() and predict see the same pixels
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / f"{i}.png")
    predicted = predict(PredictConfig(run=str(tmp_path / "run"), inputs=[str(images)], device="cpu"))
    assert [Path(f).name for f in predicted.files] == ["0.png", "1.png", "2.png"]
    assert predicted.scores.shape == (3, 3) and np.allclose(predicted.scores.sum(axis=1), 1, atol=1e-5)
    classify = pipeline("image-classification", model=str(tmp_path / "run" / "model"), device="cpu")
    scores = {p["label"]: p["score"] for p in classify(str(images / "0.png"), top_k=None)}
    raw = load_run(tmp_path / "run", "cpu", calibrate=False)  # pipeline() applies no fitted temperature
    uncalibrated = raw.scores([decode_image(images / "0.png", raw.prep.image_size)[None]])
    assert [scores[name] for name in ("a", "b", "c")] == pytest.approx(list(uncalibrated[0]), abs=1e-5)


def test_lora_on_a_timm_checkpoint_is_refused(tiny_timm, dataset_dir_factory, tmp_path):
    data = dataset_dir_factory(sizes={"train": 8, "validation": 8})
    with pytest.raises(UserError, match="--lora supports the ViT family, DINOv2 and Swin"):
        build_trainer(TrainConfig(data=str(data), model=str(tiny_timm), out=str(tmp_path / "run"), lora=4))


def test_models_lists_timm_aliases(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "models")
    assert code == 0 and "timm/vit_base_patch16_224.augreg_in21k" in out and "timm-vit-base-mae" in out
