"""``vitune.workflows.prepare``: a DATASET_DIR cached at the input size of the model it is prepared for."""

import datasets
import numpy as np
from PIL import Image

from vitune.config import PrepareConfig
from vitune.workflows.prepare import prepare


def test_image_size_comes_from_the_model(tmp_path, tiny_vit):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "src" / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "src" / label / f"{i}.png")
    info = prepare(PrepareConfig(source=tmp_path / "src", out=tmp_path / "ds", model=str(tiny_vit), split="random",
                                 workers=1))
    assert info.image_size == 32 and info.split_method == "random"
    assert datasets.load_from_disk(str(tmp_path / "ds"))["train"].features["pixel_values"].shape == (3, 32, 32)
    given = prepare(PrepareConfig(source=tmp_path / "src", out=tmp_path / "ds8", model=str(tiny_vit), image_size=8,
                                  workers=1))
    assert given.image_size == 8  # --image-size wins over the model's
