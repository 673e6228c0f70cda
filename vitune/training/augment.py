"""Training batches on the model's device: uint8 -> float, augmentation, normalisation.

The loader only stacks uint8 rows (``[B, C, S, S]``, C = 1 for a grayscale DATASET_DIR, else 3):
a quarter of float32's bytes cross the bus, a third again for grayscale, and the CPU does no
per-pixel work. :class:`DeviceInputs` turns such a batch into the model's input at the start of
the step, on whatever device the model is on:

* ``none``: normalisation only (the path evaluation and prediction share, :func:`vitune.models.forward.normalize`);
* ``light``: random resized crop (area 0.85-1, aspect kept) plus a shift of up to 4 %, one affine resampling;
* ``strong``: the published fine-tuning recipe's augmentation, RandAugment-class: random resized crop
  (area 0.08-1, aspect 3/4-4/3), then each of nine photometric and geometric ops drawn per sample
  (about two per image, at magnitude 6 of 10 as timm's ``rand-m6``), then random erasing (p 0.25).
  Batched with kornia, each sample getting its own parameters.

Grayscale batches are augmented on their one channel and expanded to RGB by the normalisation.
Horizontal flips are opt-in (``hflip``): laterality carries meaning in chest X-rays.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vitune.errors import UserError
from vitune.models.aliases import Preprocessing
from vitune.models.forward import normalize
from vitune.tasks import Task
from vitune.training.mixing import TargetMixer

LIGHT_CROP_AREA = (0.85, 1.0)
LIGHT_MAX_SHIFT = 0.04  # fraction of the image side
STRONG_CROP_AREA = (0.08, 1.0)
STRONG_CROP_RATIO = (3 / 4, 4 / 3)
MAGNITUDE = 6 / 10  # RandAugment m6 on timm's 0-10 scale
OPS_PER_IMAGE = 2  # RandAugment n
ERASE_PROBABILITY = 0.25


def light_augment(x: torch.Tensor, hflip: bool = False) -> torch.Tensor:
    """Random resized crop (area 0.85-1, aspect kept) plus a shift of up to 4 %, per image.

    One affine resampling for the whole batch (border padding), on ``x``'s device.
    """
    n, device = x.shape[0], x.device
    scale = torch.empty(n, device=device).uniform_(*LIGHT_CROP_AREA).sqrt_()
    room = 1.0 - scale  # how far the crop window can move inside the image
    shift = (torch.rand(n, 2, device=device) * 2 - 1) * (room.unsqueeze(1) + LIGHT_MAX_SHIFT * 2)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    if hflip:
        theta[:, 0, 0] *= torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0)
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resized_crop(image_size: int, scale: tuple[float, float], hflip: bool = False) -> torch.nn.Module:
    """Random resized crop (``scale``: the share of the area kept; aspect 3/4-4/3), then a random flip with ``hflip``,
    on [0, 1] float batches, parameters drawn per sample (kornia). MAE's pre-training augmentation, bicubic as there."""
    import kornia.augmentation as K

    crop = K.RandomResizedCrop((image_size, image_size), scale=scale, ratio=STRONG_CROP_RATIO, resample="BICUBIC")
    flip = [K.RandomHorizontalFlip()] if hflip else []
    return torch.nn.Sequential(crop, *flip)


def strong_augment(image_size: int, hflip: bool = False) -> torch.nn.Module:
    """The ``strong`` pipeline on [0, 1] float batches (any channel count), parameters drawn per sample."""
    import kornia.augmentation as K

    m = MAGNITUDE
    ops = [
        K.RandomAffine(degrees=30 * m, padding_mode="border"),  # rotate
        K.RandomAffine(degrees=0, shear=(-17 * m, 17 * m, 0, 0), padding_mode="border"),  # shear x, 0.3 rad at m10
        K.RandomAffine(degrees=0, shear=(0, 0, -17 * m, 17 * m), padding_mode="border"),  # shear y
        K.RandomAffine(degrees=0, translate=(0.45 * m, 0.45 * m), padding_mode="border"),  # translate
        K.ColorJiggle(brightness=0.9 * m),
        K.ColorJiggle(contrast=0.9 * m),
        K.RandomSharpness(sharpness=0.9 * m),
        K.RandomPosterize(bits=(8 - round(4 * m), 8)),
        K.RandomEqualize(),
    ]
    for op in ops:  # each sample draws each op on its own: about OPS_PER_IMAGE ops per image
        op.p = OPS_PER_IMAGE / len(ops)
    crop = K.RandomResizedCrop((image_size, image_size), scale=STRONG_CROP_AREA, ratio=STRONG_CROP_RATIO)
    flip = [K.RandomHorizontalFlip()] if hflip else []
    erase = K.RandomErasing(p=ERASE_PROBABILITY, value=0.5)
    return torch.nn.Sequential(crop, *flip, *ops, erase)


class DeviceInputs:
    """uint8 batch on the model's device -> normalised float input; augmented and mixed while training.

    ``mixer`` (:class:`vitune.training.mixing.TargetMixer`) applies label smoothing and mixup/cutmix to a
    training batch; evaluation batches are only normalised, exactly as prediction does. ``transform`` is a
    batched augmentation of one's own on [0, 1] floats (pre-training's :func:`resized_crop`), in place of ``augment``.
    """

    def __init__(self, prep: Preprocessing, augment: str = "none", hflip: bool = False, mixer=None,
                 transform: torch.nn.Module | None = None) -> None:
        self.prep = prep
        self.augment = augment
        self.hflip = hflip
        self.mixer = mixer
        self._random = transform or (strong_augment(prep.image_size, hflip) if augment == "strong" else None)

    def __call__(self, pixels: torch.Tensor, labels: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(model input, targets)`` of one batch; ``train`` turns on augmentation and mixing."""
        if not train:
            return normalize(pixels, self.prep), labels
        x = self.augmented(pixels)
        if self.mixer is not None:
            x, labels = self.mixer(x, labels)
        return x, labels

    @torch.no_grad()
    def augmented(self, pixels: torch.Tensor) -> torch.Tensor:
        """A training batch normalised, after the ``augment`` mode's random transforms."""
        if self._random is None and self.augment == "none":
            return normalize(pixels, self.prep)
        x = pixels.to(torch.float32).div_(255.0)
        x = light_augment(x, self.hflip) if self._random is None else self._random.to(x.device)(x)
        return normalize(x, self.prep, peak=1.0)


def device_inputs_for(config, prep: Preprocessing, task: Task, n_outputs: int) -> DeviceInputs:
    """A TrainConfig's :class:`DeviceInputs`: ``--augment``, label smoothing, mixup / cutmix."""
    if config.label_smoothing and not task.is_classification:
        raise UserError(f"--label-smoothing applies to classification, not {task.name}: drop it")
    mixes = config.label_smoothing or config.mixup or config.cutmix
    mixer = TargetMixer(task, n_outputs, config.label_smoothing, config.mixup, config.cutmix) if mixes else None
    return DeviceInputs(prep, config.augment, config.augment_hflip, mixer)
