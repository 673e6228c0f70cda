"""The fine-tuning recipe's model-side settings: layer-wise LR decay and drop path (stochastic depth).

Layer-wise LR decay (BEiT, MAE, medical_mae): the patch embedding sits at depth 0, transformer block
``i`` at ``i + 1`` (Swin: its blocks numbered through the stages, a stage's patch merging with its
last block), everything above the blocks (final norm, head) at ``L + 1``; a parameter at depth ``d``
learns at ``lr * decay ** (L + 1 - d)``. Parameters are grouped by (depth, weight decay or not).

Drop path: BEiT, DINOv2 and Swin build it from ``config.drop_path_rate`` (BEiT and Swin rising
linearly over the depth, DINOv2 the same rate in every block). transformers' ViT and DeiT have none,
so each block's residual-branch dropout is followed by transformers' own ``DropPath`` at a rate rising
linearly from 0 to ``rate`` (timm's schedule); the rate is recorded in the model config. The module has
no weights: the saved model is the plain transformers model.
"""

from __future__ import annotations

import re

from vitune.errors import UserError

PLAIN_BLOCKS = ("vit", "deit", "beit", "dinov2")  # one list of blocks, numbered by BLOCK
BLOCK = re.compile(r"\.(?:encoder\.)?layers?\.(\d+)\.")
SWIN_BLOCK = re.compile(r"\.encoder\.layers\.(\d+)\.(?:blocks\.(\d+)\.|downsample\.)")
LAYER_DECAY_TYPES = (*PLAIN_BLOCKS, "swin")
CONFIG_DROP_PATH = ("beit", "dinov2", "swin")  # built from config.drop_path_rate
BRANCH_DROP_PATH = ("vit", "deit")  # added here after the blocks' residual-branch dropout


def block_count(config) -> int:
    """Number of transformer blocks ``L`` of a supported model config."""
    return sum(config.depths) if config.model_type == "swin" else config.num_hidden_layers


def parameter_depth(name: str, config) -> int:
    """Depth of parameter ``name``: 0 embeddings, ``i + 1`` block ``i``, ``L + 1`` above the blocks."""
    if ".embeddings." in name:
        return 0
    if config.model_type == "swin":
        match = SWIN_BLOCK.search(name)
        if match:
            stage, block = int(match.group(1)), match.group(2)
            before = sum(config.depths[:stage])
            return before + int(block) + 1 if block is not None else before + config.depths[stage]
    else:
        match = BLOCK.search(name)
        if match:
            return int(match.group(1)) + 1
    return block_count(config) + 1


def require_layer_decay(config) -> None:
    """A :class:`UserError` unless ``--layer-decay`` knows the blocks of this model type."""
    if config.model_type not in LAYER_DECAY_TYPES:
        raise UserError(f"--layer-decay supports {', '.join(LAYER_DECAY_TYPES)} models, not {config.model_type}: "
                        "drop --layer-decay")


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
    if config.model_type in CONFIG_DROP_PATH:
        return {"drop_path_rate": rate}
    if config.model_type in BRANCH_DROP_PATH:
        return {}
    raise UserError(f"--drop-path applies to {', '.join(CONFIG_DROP_PATH + BRANCH_DROP_PATH)} models, not "
                    f"{config.model_type}: drop --drop-path")


def add_branch_drop_path(model, rate: float) -> None:
    """ViT/DeiT: stochastic depth after each block's residual-branch dropout, rising 0 -> ``rate``."""
    import torch
    from transformers.models.beit.modeling_beit import BeitDropPath

    if rate == 0.0 or model.config.model_type not in BRANCH_DROP_PATH:
        return
    blocks = getattr(model, model.base_model_prefix).layers
    for index, block in enumerate(blocks):
        block_rate = rate * index / max(len(blocks) - 1, 1)
        block.dropout = torch.nn.Sequential(block.dropout, BeitDropPath(block_rate))
    model.config.drop_path_rate = rate
