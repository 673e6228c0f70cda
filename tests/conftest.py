"""Shared fixtures: tiny random checkpoints and tiny prepared datasets, all offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
# Under pytest-xdist each worker gets its share of the cores, so that the workers' torch and ONNX Runtime
# threads together do not oversubscribe the machine.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

from pathlib import Path  # noqa: E402

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from vitune.data.dataset_dir import DatasetInfo, features_for  # noqa: E402

TINY_SIZE = 32
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def save_tiny_vit(path: Path, image_size: int = TINY_SIZE) -> Path:
    """A random 2-layer ViT (hidden 32) with its image processor, in ``save_pretrained`` layout."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=image_size,
        patch_size=8,
    )
    import torch

    torch.manual_seed(0)
    ViTModel(config, add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    """Path of a tiny random ViT checkpoint (backbone only, like the in21k checkpoints)."""
    return save_tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


def _images_for(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Images whose quadrant brightness encodes the label vector, plus noise: learnable, not trivial."""
    n, k = labels.shape
    images = rng.integers(0, 90, size=(n, 3, size, size), dtype=np.int64)
    cell = size // 4
    for j in range(k):
        r, c = divmod(j % 16, 4)
        on = labels[:, j] > 0
        images[on, :, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] += 140
    return np.clip(images, 0, 255).astype(np.uint8)


def write_dataset_dir(
    out: Path,
    task: str = "multi_label",
    labels: list[str] | None = None,
    sizes: dict[str, int] | None = None,
    image_size: int = TINY_SIZE,
    seed: int = 0,
) -> Path:
    """Write a small DATASET_DIR (spec layout) with a learnable signal, bypassing ``prepare``."""
    rng = np.random.default_rng(seed)
    sizes = sizes or {"train": 48, "validation": 24, "test": 24}
    labels = labels or (["score"] if task == "regression" else ["a", "b", "c"])
    splits = {}
    for split, n in sizes.items():
        if task == "multi_label":
            y = (rng.random((n, len(labels))) < 0.4).astype(np.float32)
            y[0], y[1] = 1.0, 0.0  # every label has both classes in every split
            column = [list(map(float, row)) for row in y]
        elif task == "single_label":
            cls = np.arange(n) % len(labels)
            y = np.eye(len(labels), dtype=np.float32)[cls]
            column = [int(c) for c in cls]
        else:
            score = rng.uniform(0, 100, n).astype(np.float32)
            y = (score[:, None] > 50).astype(np.float32)
            column = [float(s) for s in score]
        splits[split] = (_images_for(y, image_size, rng), column)
    return save_dataset_dir(out, task, labels, splits)


def save_dataset_dir(out: Path, task: str, labels: list[str], splits: dict[str, tuple[np.ndarray, list]],
                     groups: dict[str, list[str | None]] | None = None) -> Path:
    """Write ``{split: (uint8 pixels [n, 3, S, S], labels column)}`` as a DATASET_DIR (spec layout); ``groups``
    gives each split's patients (default: one per image, ``p<row>``)."""
    image_size = next(iter(splits.values()))[0].shape[-1]
    datasets.DatasetDict({
        split: datasets.Dataset.from_dict(
            {
                "pixel_values": pixels,
                "labels": column,
                "file": [f"{split}/{i}.png" for i in range(len(column))],
                "group": groups[split] if groups else [f"p{i}" for i in range(len(column))],
            },
            features=features_for(task, image_size),
        )
        for split, (pixels, column) in splits.items()
    }).save_to_disk(str(out))
    DatasetInfo(
        task=task,
        labels=labels,
        image_size=image_size,
        format="synthetic",
        source="tests",
        splits={split: len(column) for split, (_, column) in splits.items()},
    ).save(out)
    return out


def write_patient_dataset_dir(out: Path, patients: dict[str, int], images_per_patient: int = 3, seed: int = 0,
                              labels: tuple[str, ...] = ("a", "b", "c"), positive_rate: float = 0.4) -> Path:
    """A multi-label DATASET_DIR whose patients have ``images_per_patient`` images each, patients numbered across
    the splits (``pt0``, ``pt1``, ... ; none in two splits), with a learnable signal."""
    rng = np.random.default_rng(seed)
    splits, groups = {}, {}
    first = 0
    for split, count in patients.items():
        n = count * images_per_patient
        y = (rng.random((n, len(labels))) < positive_rate).astype(np.float32)
        splits[split] = (_images_for(y, TINY_SIZE, rng), [list(map(float, row)) for row in y])
        groups[split] = [f"pt{first + i // images_per_patient}" for i in range(n)]
        first += count
    return save_dataset_dir(out, "multi_label", list(labels), splits, groups)


@pytest.fixture
def dataset_dir_factory(tmp_path):
    """Call with ``task=...`` to get a fresh tiny DATASET_DIR under ``tmp_path``."""
    counter = iter(range(1000))

    def make(**kwargs) -> Path:
        return write_dataset_dir(tmp_path / f"ds{next(counter)}", **kwargs)

    return make
