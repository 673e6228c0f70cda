"""Attention rollout, plain and gradient-weighted, for the ViT family (ViT, DeiT, BEiT, DINOv2).

No maintained library computes these for transformers' models, so they are written here:

- ``rollout`` (Abnar & Zuidema 2020): per layer the heads' mean attention plus the identity (the
  residual path), rows renormalised, multiplied through the layers. Class-agnostic.
- ``grad-rollout`` (Chefer, Gur & Wolf 2021, "Generic attention-model explainability"): per layer
  ``A_bar = mean_heads((dA ⊙ A)+)``, the attention weighted by the gradient of the explained
  logit and kept where positive, accumulated as ``R = R + A_bar R`` from ``R = I``. Class-specific.

Either way the map is the relevance of each patch token to the tokens the classifier reads (the
family table's :meth:`~vitune.models.families.Family.classifier_pooling`): the [CLS] row (ViT,
DeiT), the mean of the patch rows (BEiT's mean pooling), or half of each (DINOv2's classifier reads
[CLS] and the patch mean). The weights come from transformers'
``output_attentions`` with the eager attention kernel (SDPA returns none), switched on only for
the explanation.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from vitune.models.families import CLS, MEAN, family_of


def supports_rollout(config) -> bool:
    """Whether the model is a plain ViT-family encoder whose global attention rollout applies."""
    return family_of(config).supports_rollout


@contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` with the eager attention kernel (which returns the weights), restored afterwards."""
    previous = model.config._attn_implementation
    if previous != "eager":
        model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)


def _reader_weights(config, tokens: int, device) -> torch.Tensor:
    """``[T]`` weights of the tokens the classifier reads (they sum to 1)."""
    cls = torch.zeros(tokens, device=device)
    cls[0] = 1.0
    mean = torch.zeros(tokens, device=device)
    mean[1:] = 1.0 / (tokens - 1)  # the heads average every token after [CLS]
    pooling = family_of(config).classifier_pooling(config)
    return cls if pooling == CLS else mean if pooling == MEAN else 0.5 * (cls + mean)


def _patch_grid(pixels: torch.Tensor, config) -> tuple[int, int]:
    """Rows and columns of patch tokens for this input."""
    patch = config.patch_size[0] if isinstance(config.patch_size, (list, tuple)) else config.patch_size
    return pixels.shape[-2] // int(patch), pixels.shape[-1] // int(patch)


def _relevance_to_maps(relevance: torch.Tensor, config, pixels: torch.Tensor) -> torch.Tensor:
    """``[B, T, T]`` token relevance -> ``[B, rows, cols]`` patch maps seen from the classifier's tokens."""
    tokens = relevance.shape[-1]
    rows, cols = _patch_grid(pixels, config)
    reader = _reader_weights(config, tokens, relevance.device)
    # patch tokens come last, after [CLS] and any distillation or register tokens
    seen = torch.einsum("t,btu->bu", reader, relevance)[:, tokens - rows * cols:]
    return seen.reshape(-1, rows, cols)


def _attentions(model: torch.nn.Module, pixels: torch.Tensor):
    outputs = model(pixel_values=pixels, output_attentions=True)
    if not outputs.attentions or outputs.attentions[0] is None:
        raise RuntimeError(f"{type(model).__name__} returned no attention weights")
    return outputs.logits, outputs.attentions


def rollout_maps(model: torch.nn.Module, pixels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Plain attention rollout ``[B, rows, cols]`` (``targets`` is ignored: the map is class-agnostic)."""
    with torch.no_grad(), eager_attention(model):
        _, attentions = _attentions(model, pixels)
    tokens = attentions[0].shape[-1]
    eye = torch.eye(tokens, device=pixels.device)
    relevance = eye.expand(pixels.shape[0], tokens, tokens)
    for attention in attentions:
        mixed = 0.5 * attention.float().mean(dim=1) + 0.5 * eye
        relevance = (mixed / mixed.sum(dim=-1, keepdim=True)) @ relevance
    return _relevance_to_maps(relevance, model.config, pixels)


def gradient_rollout_maps(model: torch.nn.Module, pixels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Chefer et al.'s gradient-weighted rollout ``[B, rows, cols]`` of logit ``targets[b]`` for image ``b``."""
    with torch.enable_grad(), eager_attention(model):
        pixels = pixels.detach().requires_grad_(True)  # the graph without gradients for the weights
        logits, attentions = _attentions(model, pixels)
        chosen = logits.float().gather(1, targets.view(-1, 1)).sum()  # images are independent: one backward
        gradients = torch.autograd.grad(chosen, attentions)
    tokens = attentions[0].shape[-1]
    relevance = torch.eye(tokens, device=pixels.device).expand(pixels.shape[0], tokens, tokens)
    for attention, gradient in zip(attentions, gradients):
        weighted = (gradient.float() * attention.detach().float()).clamp(min=0).mean(dim=1)
        relevance = relevance + weighted @ relevance
    return _relevance_to_maps(relevance, model.config, pixels)
