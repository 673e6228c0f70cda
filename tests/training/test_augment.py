"""Batches stay uint8 until the device: the loader, the on-device preparation, grayscale DATASET_DIRs."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch

from vitune.config import TrainConfig
from vitune.data.dataset_dir import features_for
from vitune.models.aliases import resolve_preprocessing
from vitune.models.forward import normalize
from vitune.training.augment import DeviceInputs, strong_augment
from vitune.training.fine_tune import build_trainer


def config_for(data, model, out, **kwargs) -> TrainConfig:
    """Tiny settings, the loader in the main process."""
    return TrainConfig(data=str(data), model=str(model), out=str(out), **{"batch_size": 8, "num_workers": 0, **kwargs})


@pytest.mark.parametrize("augment", ["none", "light", "strong"])
def test_loader_yields_uint8_batches_and_the_step_gets_them_normalised(tiny_vit, dataset_dir_factory, tmp_path,
                                                                      augment):
    trainer = build_trainer(config_for(dataset_dir_factory(), tiny_vit, tmp_path / "run", augment=augment))
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].shape == (8, 3, 32, 32)
    prep = resolve_preprocessing(str(tiny_vit))
    evaluated, labels = trainer.device_inputs(batch["pixel_values"], batch["labels"], train=False)
    assert torch.equal(evaluated, normalize(batch["pixel_values"], prep)) and labels is batch["labels"]
    trained, _ = trainer.device_inputs(batch["pixel_values"], batch["labels"], train=True)
    assert trained.dtype == torch.float32 and trained.shape == (8, 3, 32, 32)
    assert torch.equal(trained, evaluated) == (augment == "none")


def test_strong_augment_draws_its_parameters_per_sample():
    torch.manual_seed(0)
    image = torch.linspace(0, 1, 32 * 32).reshape(1, 1, 32, 32)
    out = strong_augment(32)(image.expand(8, 1, 32, 32).contiguous())
    distinct = {tuple(row.flatten()[:64].round(decimals=4).tolist()) for row in out}
    assert len(distinct) == 8  # eight copies of one image, eight different results
    assert out.min() >= 0 and out.max() <= 1


def test_strong_augment_flips_only_when_asked():
    def flips(module):
        return [m for m in module if type(m).__name__ == "RandomHorizontalFlip"]

    assert flips(strong_augment(32)) == [] and len(flips(strong_augment(32, hflip=True))) == 1


def gray_copy(dataset_dir, out) -> str:
    """``dataset_dir`` with its pixels reduced to one channel (the first), as a grayscale prepare stores them."""
    ds = datasets.load_from_disk(str(dataset_dir))
    gray = {}
    for split, part in ds.items():
        pixels = np.asarray(part.with_format("numpy")["pixel_values"])[:, :1]
        features = features_for("multi_label", pixels.shape[-1], channels=1)
        gray[split] = datasets.Dataset.from_dict({**part.remove_columns("pixel_values").to_dict(),
                                                  "pixel_values": pixels}, features=features)
    datasets.DatasetDict(gray).save_to_disk(str(out))
    (out / "dataset.json").write_text((dataset_dir / "dataset.json").read_text())
    return str(out)


def test_one_channel_dataset_gives_the_logits_of_its_three_channel_copy(tiny_vit, dataset_dir_factory, tmp_path):
    rgb = dataset_dir_factory()
    gray = gray_copy(rgb, tmp_path / "gray")
    triple = tmp_path / "triple"  # the same gray pixels stored as 0.1 did: three equal channels
    ds = datasets.load_from_disk(gray)
    datasets.DatasetDict({s: p.map(lambda row: {"pixel_values": np.repeat(np.asarray(row["pixel_values"]), 3, 0)},
                                   features=features_for("multi_label", 32)) for s, p in ds.items()}).save_to_disk(
        str(triple))
    (triple / "dataset.json").write_text((rgb / "dataset.json").read_text())
    one = build_trainer(config_for(gray, tiny_vit, tmp_path / "a"))
    three = build_trainer(config_for(triple, tiny_vit, tmp_path / "b"))
    batch = next(iter(one.get_eval_dataloader()))
    assert batch["pixel_values"].shape[1] == 1
    np.testing.assert_allclose(one.predict(one.eval_dataset).predictions,
                               three.predict(three.eval_dataset).predictions, rtol=1e-5, atol=1e-6)


def test_mixing_applies_to_training_batches_only(tiny_vit, dataset_dir_factory, tmp_path):
    trainer = build_trainer(config_for(dataset_dir_factory(), tiny_vit, tmp_path / "run", mixup=0.4,
                                       label_smoothing=0.1))
    batch = next(iter(trainer.get_train_dataloader()))
    _, eval_targets = trainer.device_inputs(batch["pixel_values"], batch["labels"], train=False)
    _, train_targets = trainer.device_inputs(batch["pixel_values"], batch["labels"], train=True)
    assert set(eval_targets.unique().tolist()) <= {0.0, 1.0}
    assert train_targets.min() >= 0.05 - 1e-6 and train_targets.max() <= 0.95 + 1e-6  # smoothed, then mixed
    assert isinstance(trainer.device_inputs, DeviceInputs)
