"""timm checkpoints (``timm/...`` Hub ids and local timm folders) through transformers' ``TimmWrapper``.

A timm checkpoint keeps its preprocessing in ``config.json``'s ``pretrained_cfg`` (input size, mean,
std, interpolation, crop). transformers reads it into a ``TimmWrapperImageProcessor``, which vitune
turns into the plain square-resize processor every run uses (:func:`plain_processor`). The saved
run's ``pretrained_cfg`` is set to squash the whole image to the input size, uncropped, so that
``pipeline()`` on ``model/`` sees images as the DATASET_DIR (resized once to a square) had them.
"""

from __future__ import annotations

from vitune.models.families import TIMM_WRAPPER, family_of


def is_timm_config(config) -> bool:
    """Whether ``config`` (a ``PretrainedConfig``) is a timm checkpoint's."""
    return family_of(config) is TIMM_WRAPPER


def is_timm_processor(processor) -> bool:
    """Whether ``processor`` is transformers' wrapper of timm's transforms."""
    return type(processor).__name__ == "TimmWrapperImageProcessor"


def plain_processor(processor):
    """A ``ViTImageProcessor`` with the size, mean, std and interpolation timm resolved from ``pretrained_cfg``."""
    from PIL import Image
    from transformers import ViTImageProcessor

    data = processor.data_config
    _, height, width = data["input_size"]
    resample = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST}.get(data.get("interpolation"), Image.BICUBIC)
    return ViTImageProcessor(size={"height": height, "width": width}, image_mean=list(data["mean"]),
                             image_std=list(data["std"]), resample=resample)


def classifier_config(config, num_labels: int, id2label: dict, problem_type: str | None):
    """``config`` set up for a new ``num_labels`` head, whose saved preprocessing squashes, uncropped."""
    config.num_labels = num_labels
    config.id2label, config.label2id = id2label, {name: i for i, name in id2label.items()}
    config.problem_type = problem_type
    # timm's own save_for_hf records num_classes among the model's arguments too, which would clash
    # with the head size transformers passes to timm.create_model
    (config.model_args or {}).pop("num_classes", None)
    config.pretrained_cfg = {**(config.pretrained_cfg or {}), "crop_pct": 1.0, "crop_mode": "squash"}
    return config
