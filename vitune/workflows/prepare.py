"""`vitune data prepare` with ``--model``: the DATASET_DIR cached at that model's input size.

The data layer cannot ask a model for its input size (models sit above it), so this wrapper looks the
size up (:func:`vitune.models.aliases.default_image_size`) and prepares at it.
"""

from __future__ import annotations

import dataclasses

from vitune.config import PrepareConfig
from vitune.data.dataset_dir import DatasetInfo
from vitune.data.prepare import prepare as prepare_at_size
from vitune.models.aliases import default_image_size


def prepare(config: PrepareConfig) -> DatasetInfo:
    """Prepare SOURCE into DATASET_DIR at ``--image-size``, else ``--model``'s input size, else 224."""
    if config.image_size is None and config.model is not None:
        config = dataclasses.replace(config, image_size=default_image_size(config.model))
    return prepare_at_size(config)
