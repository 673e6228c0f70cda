"""Embeddings: pooling, run vs checkpoint backbones, the on-disk cache and its key."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitune.errors import UserError
from vitune.models.aliases import resolve_preprocessing
from vitune.models.embeddings import cache_key, extract_embeddings
from vitune.models.encoder import Encoder
from vitune.models.forward import normalize
from vitune.storage.layout import RunDir


def reference_hidden(tiny_vit, data, split="train"):
    """Last hidden state of the tiny ViT computed directly with transformers."""
    import datasets
    from transformers import ViTModel

    pixels = np.asarray(datasets.load_from_disk(str(data))[split].with_format("numpy")["pixel_values"][:])
    model = ViTModel.from_pretrained(tiny_vit).eval()
    with torch.inference_mode():
        x = normalize(torch.as_tensor(pixels), resolve_preprocessing(str(tiny_vit)))
        return model(pixel_values=x).last_hidden_state.numpy()


def test_cls_and_mean_pooling_match_transformers(tiny_vit, dataset_dir_factory):
    data = dataset_dir_factory(task="multi_label")
    hidden = reference_hidden(tiny_vit, data)
    cls = extract_embeddings(str(tiny_vit), data, "train", pooling="cls", batch_size=20)
    mean = extract_embeddings(str(tiny_vit), data, "train", pooling="mean", batch_size=20)
    assert cls.values.dtype == np.float32 and cls.values.shape == (48, 32) and cls.logits is None
    np.testing.assert_allclose(cls.values, hidden[:, 0], atol=1e-5)
    np.testing.assert_allclose(mean.values, hidden[:, 1:].mean(axis=1), atol=1e-5)
    assert cls.cached is False and cls.path is None


def test_cache_is_reused_and_keyed_on_pooling_and_data(tiny_vit, dataset_dir_factory, tmp_path):
    data, other = dataset_dir_factory(task="regression"), dataset_dir_factory(task="regression", seed=1)
    cache = tmp_path / "cache"
    first = extract_embeddings(str(tiny_vit), data, "validation", cache_dir=cache)
    second = extract_embeddings(str(tiny_vit), data, "validation", cache_dir=cache)
    assert (first.cached, second.cached) == (False, True)
    np.testing.assert_array_equal(first.values, second.values)
    assert second.path == first.path and first.path.name.startswith("validation-") and first.path.suffix == ".npy"
    encoder = Encoder(str(tiny_vit))
    keys = {cache_key(encoder, data, "validation", "cls"), cache_key(encoder, data, "validation", "mean"),
            cache_key(encoder, other, "validation", "cls"), cache_key(encoder, data, "train", "cls")}
    assert len(keys) == 4
    assert "net" not in encoder.__dict__  # computing keys (and cache hits) never loads the weights


def test_run_dir_gives_base_model_embeddings_and_classifier_logits(tiny_vit, dataset_dir_factory, tmp_path):
    from transformers import AutoImageProcessor

    from vitune.models.aliases import load_classifier

    data = dataset_dir_factory(task="multi_label")
    run = tmp_path / "run"
    torch.manual_seed(0)
    net = load_classifier(str(tiny_vit), "multi_label", ["a", "b", "c"])
    net.save_pretrained(run / "model")
    AutoImageProcessor.from_pretrained(tiny_vit).save_pretrained(run / "model")
    assert RunDir(run).is_run() and RunDir(run).model == run / "model" and not RunDir(tiny_vit).is_run()
    result = extract_embeddings(str(run), data, "validation", cache_dir=tmp_path / "c")
    np.testing.assert_allclose(result.values, reference_hidden(tiny_vit, data, "validation")[:, 0], atol=1e-5)
    # ViT's classifier reads the [CLS] state: logits = classifier(embedding).
    with torch.inference_mode():
        expected = net.classifier(torch.as_tensor(result.values)).numpy()
    np.testing.assert_allclose(result.logits, expected, atol=1e-5)
    cached = extract_embeddings(str(run), data, "validation", cache_dir=tmp_path / "c")
    assert cached.cached and np.array_equal(cached.logits, result.logits)


def test_bad_pooling_and_missing_split_are_user_errors(tiny_vit, dataset_dir_factory):
    data = dataset_dir_factory(task="multi_label", sizes={"train": 4, "validation": 4})
    with pytest.raises(UserError, match="pooling"):
        extract_embeddings(str(tiny_vit), data, "train", pooling="max")
    with pytest.raises(UserError, match="no 'test' split"):
        extract_embeddings(str(tiny_vit), data, "test")
