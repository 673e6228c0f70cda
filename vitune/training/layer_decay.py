"""The fine-tuning recipe's model-side settings: layer-wise LR decay and drop path (stochastic depth).

Which families take each setting, and how their blocks are laid out, is the family table's
(:mod:`vitune.models.families`).

Layer-wise LR decay (BEiT, MAE, medical_mae): the patch embedding sits at depth 0, transformer block
``i`` at ``i + 1`` (Swin's stage layout: its blocks numbered through the stages, a stage's patch
merging with its last block), everything above the blocks (final norm, head) at ``L + 1``; a
parameter at depth ``d`` learns at ``lr * decay ** (L + 1 - d)``. Parameters are grouped by (depth,
weight decay or not).

Drop path: BEiT, DINOv2 and Swin build it from ``config.drop_path_rate`` (BEiT and Swin rising
linearly over the depth, DINOv2 the same rate in every block). transformers' ViT and DeiT have none,
so each block's residual-branch dropout is followed by transformers' own ``DropPath`` at a rate rising
linearly from 0 to ``rate`` (timm's schedule); the rate is recorded in the model config. The module has
no weights: the saved model is the plain transformers model.
"""

from __future__ import annotations

import re

from vitune.errors import UserError
from vitune.models.families import BlockLayout, DropPath, family_of, model_types_with

PLAIN_BLOCK = re.compile(r"\.(?:encoder\.)?layers?\.(\d+)\.")
STAGE_BLOCK = re.compile(r"\.encoder\.layers\.(\d+)\.(?:blocks\.(\d+)\.|downsample\.)")


def block_count(config) -> int:
    """Number of transformer blocks ``L`` of a supported model config."""
    if family_of(config).layout is BlockLayout.STAGES:
        return sum(config.depths)
    return config.num_hidden_layers


def _stage_depth(name: str, config) -> int | None:
    """Depth of a parameter in Swin's stages: blocks numbered through the stages, a patch merging with
    its stage's last block; None outside the blocks."""
    match = STAGE_BLOCK.search(name)
    if not match:
        return None
    stage, block = int(match.group(1)), match.group(2)
    before = sum(config.depths[:stage])
    if block is None:  # the stage's downsample
        return before + config.depths[stage]
    return before + int(block) + 1


def _plain_depth(name: str) -> int | None:
    """Depth of a parameter in one list of blocks (block ``i`` at ``i + 1``); None outside the blocks."""
    match = PLAIN_BLOCK.search(name)
    if not match:
        return None
    return int(match.group(1)) + 1


def parameter_depth(name: str, config) -> int:
    """Depth of parameter ``name``: 0 embeddings, ``i + 1`` block ``i``, ``L + 1`` above the blocks."""
    if ".embeddings." in name:
        return 0
    if family_of(config).layout is BlockLayout.STAGES:
        depth = _stage_depth(name, config)
    else:
        depth = _plain_depth(name)
    if depth is None:
        return block_count(config) + 1
    return depth


def require_layer_decay(config) -> None:
    """A :class:`UserError` unless ``--layer-decay`` knows the blocks of the classifier trained from ``config``."""
    family = family_of(config).classifier_family
    if not family.supports_layer_decay:
        raise UserError(f"--layer-decay supports {model_types_with('supports_layer_decay')} models, not "
                        f"{family.model_type}: drop --layer-decay")


def layer_decay_groups(model, decay_names: set[str] | list[str], weight_decay: float, lr: float,
                       decay: float) -> list[dict]:
    """Optimizer parameter groups, one per (depth, decayed or not), each with its ``lr``."""
    config = model.config
    require_layer_decay(config)
    top = block_count(config) + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        depth, decayed = parameter_depth(name, config), name in decay_names
        group = groups.setdefault((depth, decayed), {
            "params": [], "lr": lr * decay ** (top - depth), "weight_decay": weight_decay if decayed else 0.0,
        })
        group["params"].append(parameter)
    return [groups[key] for key in sorted(groups)]


def drop_path_overrides(config, rate: float) -> dict:
    """``from_pretrained`` config overrides for drop path ``rate`` (UserError where it has no place)."""
    if rate == 0.0:
        return {}
    family = family_of(config).classifier_family
    if family.drop_path is DropPath.CONFIG:
        return {"drop_path_rate": rate}
    if family.drop_path is DropPath.BRANCH:
        return {}
    raise UserError(f"--drop-path applies to {model_types_with('supports_drop_path')} models, not "
                    f"{family.model_type}: drop --drop-path")


def add_branch_drop_path(model, rate: float) -> None:
    """ViT/DeiT: stochastic depth after each block's residual-branch dropout, rising 0 -> ``rate``."""
    import torch
    from transformers.models.beit.modeling_beit import BeitDropPath

    if rate == 0.0 or family_of(model.config).drop_path is not DropPath.BRANCH:
        return
    blocks = getattr(model, model.base_model_prefix).layers
    for index, block in enumerate(blocks):
        block_rate = rate * index / max(len(blocks) - 1, 1)
        block.dropout = torch.nn.Sequential(block.dropout, BeitDropPath(block_rate))
    model.config.drop_path_rate = rate
