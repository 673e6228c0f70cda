"""Soft training targets: label smoothing and mixup / cutmix, as transforms of a batch before the loss.

The task's own loss then sees soft targets (:meth:`vitune.tasks.base.Task.soft_targets`): a
probability row per image for single_label, a value in [0, 1] per label for multi_label. A NaN
multi-label target (unknown) stays NaN when mixed, so the masked loss still ignores it.

As timm's ``Mixup``: one mixing weight ``lam`` per batch, drawn from Beta(alpha, alpha); each
image is mixed with the image at the mirrored position of the batch; with both ``mixup`` and
``cutmix`` on, each batch uses one of the two at random. Cutmix's ``lam`` is corrected to the
pasted box's true area.
"""

from __future__ import annotations

import math

import torch

from vitune.tasks import Task


class TargetMixer:
    """Label smoothing ``smoothing`` and mixup / cutmix (Beta alphas; 0 = off) on a training batch."""

    def __init__(self, task: Task, n_outputs: int, smoothing: float = 0.0, mixup: float = 0.0,
                 cutmix: float = 0.0) -> None:
        self.task = task
        self.n_outputs = n_outputs
        self.smoothing = smoothing
        self.mixup = mixup
        self.cutmix = cutmix

    def __call__(self, pixels: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixed batch and its soft targets (same shapes as the task's loss takes)."""
        targets = self.task.soft_targets(labels, self.n_outputs, self.smoothing)
        alpha, use_cutmix = self._choice()
        if alpha == 0.0 or len(pixels) < 2:
            return pixels, targets
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        if use_cutmix:
            pixels, lam = paste_box(pixels, lam)
        else:
            pixels = pixels * lam + pixels.flip(0) * (1.0 - lam)
        return pixels, mix_targets(targets, lam)

    def _choice(self) -> tuple[float, bool]:
        """(alpha, cutmix?) of this batch: one of the two at random when both are on."""
        if self.mixup > 0 and self.cutmix > 0:
            use_cutmix = bool(torch.rand(()) < 0.5)
            return (self.cutmix if use_cutmix else self.mixup), use_cutmix
        return (self.cutmix, True) if self.cutmix > 0 else (self.mixup, False)


def mix_targets(targets: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam * y + (1 - lam) * y[mirrored]``: each image's targets with its partner's."""
    return targets * lam + targets.flip(0) * (1.0 - lam)


def paste_box(pixels: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """Cutmix: a box of area ``1 - lam`` from each image's partner; returns the images and the exact ``lam``."""
    height, width = pixels.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    box_h, box_w = int(height * cut), int(width * cut)
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
    mixed = pixels.clone()
    mixed[..., top:bottom, left:right] = pixels.flip(0)[..., top:bottom, left:right]
    return mixed, 1.0 - (bottom - top) * (right - left) / (height * width)
