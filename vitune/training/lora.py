"""LoRA through PEFT: low-rank adapters on the attention projections, the classifier head trained in full.

``--lora R`` wraps the classifier in a ``peft.PeftModel`` before the Trainer sees it. The run
saves the adapter alone in ``RUN_DIR/adapter/`` and the merged model in ``model/``, so everything
that reads ``model/`` (``pipeline()``, predict, heads, export) works as for a full fine-tune.
:func:`parameter_counts` is the ``"parameters"`` entry of every run's ``metrics.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from vitune.config import TrainConfig
from vitune.errors import UserError
from vitune.models.families import family_of, model_types_with

log = logging.getLogger(__name__)

HEADS = ("classifier", "distillation_classifier")  # trained in full (modules_to_save)
LORA_DROPOUT = 0.1


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """``{"total", "trainable"}`` parameter counts (a LoRA model counts its adapters and frozen base)."""
    params = list(model.parameters())
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}


def is_lora(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a PEFT-wrapped model."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def _targets_and_heads(model: torch.nn.Module, config: TrainConfig) -> tuple[list[str], list[str]]:
    family = family_of(model.config)
    if not family.supports_lora:
        raise UserError(f"--lora supports the ViT family, DINOv2 and Swin ({model_types_with('supports_lora')}), "
                        f"not {family.model_type!r} ({config.model}): drop --lora to fine-tune every weight")
    heads = [name for name in HEADS if hasattr(model, name)]
    targets = config.lora_targets
    if targets is None:
        targets = family.lora_modules(name.rsplit(".", 1)[-1] for name, _ in model.named_modules())
    return targets, heads


def add_lora(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    """``model`` with LoRA adapters of rank ``config.lora`` (alpha default: the rank); the head trained in full."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise UserError("--lora needs the peft package: pip install 'peft>=0.13'") from exc
    targets, heads = _targets_and_heads(model, config)
    lora_config = LoraConfig(r=config.lora, lora_alpha=config.lora_alpha or config.lora, target_modules=targets,
                             lora_dropout=LORA_DROPOUT, modules_to_save=heads)
    try:
        wrapped = get_peft_model(model, lora_config)
    except ValueError as exc:  # a target module name the model does not have
        raise UserError(f"--lora-targets {','.join(targets)}: {str(exc).splitlines()[0]}") from exc
    counts = parameter_counts(wrapped)
    log.info("LoRA rank %d on %s: %d of %d parameters trainable (%.2f%%)", config.lora, ",".join(targets),
             counts["trainable"], counts["total"], 100 * counts["trainable"] / counts["total"])
    return wrapped


def save_lora(model, adapter_dir: Path, model_dir: Path, processor) -> None:
    """The adapter alone into ``adapter_dir``; the merged plain model and ``processor`` into ``model_dir``.

    Merging folds the adapters into the base weights in place, so call it once, after training.
    """
    model.save_pretrained(str(adapter_dir))
    merged = model.merge_and_unload()
    merged.save_pretrained(str(model_dir))
    processor.save_pretrained(str(model_dir))
