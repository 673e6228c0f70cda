"""Grad-CAM through the ``grad-cam`` package (pytorch-grad-cam), with the reshape transform a ViT needs.

The package expects convolutional ``[B, C, H, W]`` activations; transformer tokens ``[B, T, C]``
are reshaped onto their patch grid (the [CLS], distillation and register tokens dropped). The
layer is the input norm of the last block for the ViT family (past it only [CLS] reaches a
[CLS]-pooled head, so the patch tokens would get no gradient), and the final norm for Swin, whose
head mean-pools the last stage's tokens: Swin has no [CLS] token and windowed attention, so
Grad-CAM is the method that covers it.
"""

from __future__ import annotations

import numpy as np
import torch

from vitune.models.families import BlockLayout, family_of


class _Logits(torch.nn.Module):
    """A transformers classifier as the package calls it: ``model(x)`` -> the logits tensor."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The logits of ``pixels``."""
        return self.model(pixel_values=pixels).logits


def target_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The layer whose activations and gradients Grad-CAM combines (see the module docstring)."""
    if family_of(model.config).layout is BlockLayout.PLAIN:
        block = model.base_model._can_record_outputs["hidden_states"]  # the class of one encoder block
        last_block = [m for m in model.modules() if isinstance(m, block)][-1]
        return next(m for m in last_block.modules() if isinstance(m, torch.nn.LayerNorm))
    return model.base_model.layernorm


def supports_gradcam(config) -> bool:
    """ViT family and Swin (anything whose last stage is a square grid of tokens)."""
    return family_of(config).supports_gradcam


def _to_grid(rows: int, cols: int):
    """The reshape transform: ``[B, T, C]`` -> ``[B, C, rows, cols]`` over the last ``rows * cols`` tokens."""
    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, tokens.shape[1] - rows * cols:, :]  # the patches come after [CLS] and the like
        return patches.reshape(tokens.shape[0], rows, cols, tokens.shape[2]).permute(0, 3, 1, 2)

    return reshape


def _grid(model: torch.nn.Module, pixels: torch.Tensor) -> tuple[int, int]:
    """The token grid at the target layer: the patch grid, or Swin's last stage (square)."""
    config = model.config
    if family_of(config).layout is BlockLayout.PLAIN:
        patch = config.patch_size[0] if isinstance(config.patch_size, (list, tuple)) else config.patch_size
        return pixels.shape[-2] // int(patch), pixels.shape[-1] // int(patch)
    stride = int(config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0])
    stride *= 2 ** (len(config.depths) - 1)  # each later Swin stage merges 2x2 patches
    return pixels.shape[-2] // stride, pixels.shape[-1] // stride


def gradcam_maps(model: torch.nn.Module, pixels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Grad-CAM ``[B, S, S]`` (the package resizes to the input) of logit ``targets[b]`` for image ``b``."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    reshape = _to_grid(*_grid(model, pixels))
    with torch.enable_grad(), GradCAM(_Logits(model), [target_layer(model)], reshape_transform=reshape) as cam:
        maps = cam(pixels, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    model.zero_grad(set_to_none=True)  # the package's backward filled the weights' gradients
    return torch.from_numpy(np.asarray(maps, dtype=np.float32))
