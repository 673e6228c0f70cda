"""Normalisation and score conversion shared by every inference path."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vitune.models.aliases import Preprocessing
from vitune.models.forward import normalize
from vitune.tasks import get_task


def test_normalize_matches_processor_formula():
    prep = Preprocessing(2, (0.5, 0.4, 0.3), (0.5, 0.2, 0.1))
    pixels = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(pixels, prep)
    assert out[0, :, 0, 0].tolist() == pytest.approx([1.0, 3.0, 7.0])


def test_scores_per_task():
    logits = np.array([[0.0, 2.0]])
    assert get_task("multi_label").scores(logits)[0, 0] == pytest.approx(0.5)
    soft = get_task("single_label").scores(logits)
    assert soft.sum() == pytest.approx(1.0) and soft[0, 1] > soft[0, 0]
    bce = SimpleNamespace(vitune_regression_loss="bce", vitune_label_range=[0.0, 100.0])
    assert get_task("regression").scores(np.array([[0.0]]), bce)[0] == pytest.approx(50.0)
    mse = SimpleNamespace(vitune_regression_loss="mse", vitune_label_range=[10.0, 20.0])
    assert get_task("regression").scores(np.array([[0.5]]), mse)[0] == pytest.approx(15.0)


def test_devices_are_checked_against_this_machine(monkeypatch):
    import torch

    from vitune.errors import UserError
    from vitune.models.forward import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert resolve_device(None) == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="--device cuda: no such CUDA GPU here \\(0 found\\); use --device cpu"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="'tpu' is not a device"):
        resolve_device("tpu")
    with pytest.raises(UserError, match="only cpu and cuda"):
        resolve_device("meta")


def test_a_cpu_batch_runs_in_chunks_of_eight_images_and_a_gpu_batch_whole():
    from vitune.models.forward import CPU_FORWARD_IMAGES, chunked_forward, forward_chunks

    assert CPU_FORWARD_IMAGES == 8
    pixels = np.arange(20)[:, None].repeat(2, axis=1)
    assert [len(chunk) for chunk in forward_chunks(pixels, "cpu")] == [8, 8, 4]
    assert [len(chunk) for chunk in forward_chunks(pixels[:8], "cpu")] == [8]
    assert [len(chunk) for chunk in forward_chunks(pixels, torch.device("cuda"))] == [20]

    seen = []

    def forward(chunk):
        seen.append(len(chunk))
        return [chunk * 10, None]

    doubled, absent = chunked_forward(forward, pixels)
    assert seen == [8, 8, 4] and absent is None
    np.testing.assert_array_equal(doubled, pixels * 10)


def test_batched_logits_in_chunks_equal_each_images_own(tiny_vit):
    from transformers import ViTForImageClassification

    from vitune.models.forward import batched_logits

    model = ViTForImageClassification.from_pretrained(tiny_vit)
    size = model.config.image_size
    prep = Preprocessing(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    pixels = np.random.default_rng(0).integers(0, 256, (11, 3, size, size), dtype=np.uint8)
    whole = batched_logits(model, [pixels], prep)
    one_by_one = batched_logits(model, [pixels[index : index + 1] for index in range(11)], prep)
    assert whole.shape == (11, model.config.num_labels)
    np.testing.assert_allclose(whole, one_by_one, atol=1e-5)
