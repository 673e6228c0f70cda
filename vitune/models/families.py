"""The model families vitune knows, keyed by ``model_type``: one row says everything vitune needs of a family.

Every other module asks this table (:func:`family_of`) instead of naming model types: layer decay
and drop path (:mod:`vitune.training.layer_decay`), LoRA (:mod:`vitune.training.lora`), FSDP's
auto-wrap policy (:mod:`vitune.training.distributed`), the
explanation methods (:mod:`vitune.explain`), pooling in the encoder and loading a classifier
(:mod:`vitune.models`). A model type outside the table still loads, trains, embeds and predicts;
a feature that needs to know its layout refuses it with a :class:`~vitune.errors.UserError` that
names the families that have the feature (:func:`families_with`).

Where the modules disagreed before 0.3, the table decides, each checked on a tiny model of the
family in tests/models/test_families.py:

- Swin V2 numbers its blocks as Swin does (``encoder.layers.S.blocks.B``, the stage's ``downsample``)
  and builds drop path from ``config.drop_path_rate``: layer decay and drop path take it, as LoRA did.
- DINOv2 with registers is DINOv2 plus register tokens: layer decay and drop path take it too.
- ViT-MAE has no image classifier in transformers: its pre-trained encoder fine-tunes as the ViT it
  is (``fine_tunes_as``), and as a frozen encoder it embeds every patch (no random masking).
- ``--pooling mean`` (the head MAE and EVA-X fine-tune with: the patch tokens' mean, then a LayerNorm):
  BEiT switches its own (``use_mean_pooling``); ViT becomes vitune's mean-pooled ViT
  (:mod:`vitune.models.pooling`, ``pooled_as``), which a mean-pooled run turns back from with ``--pooling cls``.
- Weight decay spares what MAE's ``param_groups_lrd``, BEiT, medical_mae and timm's ``no_weight_decay()``
  spare (``no_weight_decay``): the [CLS], distillation, register and mask tokens, the position embeddings
  (MAE's decoder's included) and Swin V2's attention scale. The relative position biases (BEiT, Swin,
  Swin V2's continuous one) the Trainer spares already: it spares every parameter named ``bias``.
- ``vitune pretrain`` starts an MAE (``pretrains_as``) from a ViT's encoder or continues an MAE.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from vitune.errors import UserError

# What a family's image classifier reads: the [CLS] token, the mean of the patch tokens, or both halves.
CLS, MEAN, CLS_AND_MEAN = "cls", "mean", "cls+mean"
# The query and value projections LoRA adapts, one tuple per naming: transformers renamed the ViT
# family's query/value to q_proj/v_proj during 5.x, so the first naming a model has is used.
QUERY_VALUE = (("q_proj", "v_proj"), ("query", "value"))
QUERY_VALUE_UNRENAMED = (("query", "value"),)


class BlockLayout(enum.Enum):
    """How a family lays out its transformer blocks; layer decay numbers them, Grad-CAM reads their tokens."""

    PLAIN = "plain"  # one list of blocks (``...layer.N.`` / ``...layers.N.``) over a fixed patch grid
    STAGES = "stages"  # Swin: blocks in stages (``encoder.layers.S.blocks.B.``), each later stage merging 2x2 patches


class DropPath(enum.Enum):
    """Where ``--drop-path`` comes from for a family."""

    CONFIG = "config"  # transformers builds it from ``config.drop_path_rate``
    BRANCH = "branch"  # the family has none: vitune adds it after each block's residual-branch dropout


@dataclass(frozen=True)
class Family:
    """Everything vitune needs to know of one model family (one ``model_type``).

    A field left at its default means the family lacks that feature: no ``layout`` (no layer decay,
    no explanation), no ``drop_path``, no ``lora_targets``, no ``encoder_layer`` (no ``--fsdp``).
    """

    model_type: str
    name: str  # for people, in messages and `vitune models`
    layout: BlockLayout | None = None
    drop_path: DropPath | None = None
    lora_targets: tuple[tuple[str, ...], ...] = ()  # alternative namings of LoRA's target modules
    classifier_reads: str = CLS  # the tokens the image classifier's head reads
    mean_pooling_switch: bool = False  # the config's ``use_mean_pooling`` chooses MEAN (true) or CLS (false)
    special_tokens: tuple[str, ...] = ()  # embedding attributes holding the leading non-patch tokens
    fine_tunes_as: Family | None = None  # the family whose classifier loads this one's pre-trained encoder
    encoder_config: tuple[tuple[str, Any], ...] = ()  # config values for embedding whole images
    encoder_layer: str | None = None  # the class of one transformer block: the unit FSDP shards and gathers
    # the model type of this family's classifier that reads other tokens: (pooling, model_type) pairs
    pooled_as: tuple[tuple[str, str], ...] = ()
    no_weight_decay: tuple[str, ...] = ()  # parameter (or module) names weight decay spares
    pretrains_as: str | None = None  # the model type of the masked autoencoder this family's encoder starts
    vitune_class: bool = False  # vitune's own model class: transformers loads it once vitune registered it
    # the classifier's module: its input is the pooled feature the out-of-distribution check measures (None: unknown)
    classifier_module: str | None = "classifier"

    @property
    def classifier_family(self) -> Family:
        """The family of the classifier vitune fine-tunes from this family's checkpoints."""
        return self.fine_tunes_as or self

    @property
    def supports_layer_decay(self) -> bool:
        """Whether ``--layer-decay`` can number this family's blocks."""
        return self.layout is not None

    @property
    def supports_drop_path(self) -> bool:
        """Whether ``--drop-path`` has a place in this family."""
        return self.drop_path is not None

    @property
    def supports_lora(self) -> bool:
        """Whether ``--lora`` knows this family's attention projections."""
        return bool(self.lora_targets)

    @property
    def supports_fsdp(self) -> bool:
        """Whether ``--fsdp`` knows the blocks to wrap (its auto-wrap policy shards each one on its own)."""
        return self.encoder_layer is not None

    @property
    def supports_rollout(self) -> bool:
        """Attention rollout needs one global attention over the same tokens in every block: plain layouts."""
        return self.layout is BlockLayout.PLAIN

    @property
    def supports_gradcam(self) -> bool:
        """Grad-CAM needs a grid of tokens at its target layer: the patch grid, or Swin's last stage."""
        return self.layout is not None

    @property
    def supports_mean_pooling(self) -> bool:
        """Whether ``--pooling mean`` can give this family's classifier the mean-pooled head."""
        family = self.classifier_family
        return family.mean_pooling_switch or family.classifier_reads == MEAN or MEAN in dict(family.pooled_as)

    @property
    def supports_pretraining(self) -> bool:
        """Whether `vitune pretrain` can start a masked autoencoder from (or continue) this family's checkpoints."""
        return self.pretrains_as is not None

    def decays(self, parameter_name: str) -> bool:
        """Whether weight decay may fall on ``parameter_name`` (False for the tokens and positions it spares)."""
        return not set(parameter_name.split(".")) & set(self.no_weight_decay)

    def classifier_pooling(self, config) -> str:
        """Which tokens the classifier of ``config`` reads (:data:`CLS`, :data:`MEAN` or :data:`CLS_AND_MEAN`)."""
        if self.mean_pooling_switch:
            return MEAN if getattr(config, "use_mean_pooling", False) else CLS
        return self.classifier_reads

    def lora_modules(self, module_names: Iterable[str]) -> list[str]:
        """LoRA's target modules in a model whose modules end in ``module_names``: the first naming it has."""
        present = set(module_names)
        for naming in self.lora_targets:
            if set(naming) <= present:
                return list(naming)
        return list(self.lora_targets[0])  # PEFT reports the missing module by name


# What weight decay spares, by family: tokens and absolute positions (Swin V2 also its attention scale, as timm)
VIT_NO_DECAY = ("cls_token", "mask_token", "position_embeddings")
SWIN_NO_DECAY = ("position_embeddings", "mask_token")
SWINV2_NO_DECAY = (*SWIN_NO_DECAY, "logit_scale")

VIT = Family(
    "vit", "ViT", layout=BlockLayout.PLAIN, drop_path=DropPath.BRANCH, lora_targets=QUERY_VALUE,
    special_tokens=("cls_token",), pooled_as=((MEAN, "vit_mean_pool"),), no_weight_decay=VIT_NO_DECAY,
    pretrains_as="vit_mae", encoder_layer="ViTLayer",
)
VIT_MEAN_POOL = Family(
    "vit_mean_pool", "ViT, mean-pooled", layout=BlockLayout.PLAIN, drop_path=DropPath.BRANCH,
    lora_targets=QUERY_VALUE, classifier_reads=MEAN, special_tokens=("cls_token",), pooled_as=((CLS, "vit"),),
    no_weight_decay=VIT_NO_DECAY, vitune_class=True, encoder_layer="ViTLayer",
)
DEIT = Family(
    "deit", "DeiT", layout=BlockLayout.PLAIN, drop_path=DropPath.BRANCH, lora_targets=QUERY_VALUE,
    special_tokens=("cls_token", "distillation_token"), no_weight_decay=(*VIT_NO_DECAY, "distillation_token"), encoder_layer="DeiTLayer",
)
BEIT = Family(
    "beit", "BEiT", layout=BlockLayout.PLAIN, drop_path=DropPath.CONFIG, lora_targets=QUERY_VALUE,
    mean_pooling_switch=True, special_tokens=("cls_token",), no_weight_decay=VIT_NO_DECAY, encoder_layer="BeitLayer",
)
DINOV2 = Family(
    "dinov2", "DINOv2", layout=BlockLayout.PLAIN, drop_path=DropPath.CONFIG, lora_targets=QUERY_VALUE,
    classifier_reads=CLS_AND_MEAN, special_tokens=("cls_token",), no_weight_decay=VIT_NO_DECAY, encoder_layer="Dinov2Layer",
)
DINOV2_WITH_REGISTERS = Family(
    "dinov2_with_registers", "DINOv2 with registers", layout=BlockLayout.PLAIN, drop_path=DropPath.CONFIG,
    lora_targets=QUERY_VALUE, classifier_reads=CLS_AND_MEAN, special_tokens=("cls_token", "register_tokens"),
    no_weight_decay=(*VIT_NO_DECAY, "register_tokens"), encoder_layer="Dinov2WithRegistersLayer",
)
SWIN = Family(
    "swin", "Swin", layout=BlockLayout.STAGES, drop_path=DropPath.CONFIG, lora_targets=QUERY_VALUE,
    classifier_reads=MEAN, no_weight_decay=SWIN_NO_DECAY, encoder_layer="SwinLayer",
)
SWINV2 = Family(
    "swinv2", "Swin V2", layout=BlockLayout.STAGES, drop_path=DropPath.CONFIG, lora_targets=QUERY_VALUE_UNRENAMED,
    classifier_reads=MEAN, no_weight_decay=SWINV2_NO_DECAY, encoder_layer="Swinv2Layer",
)
VIT_MAE = Family(
    "vit_mae", "ViT-MAE", special_tokens=("cls_token",), fine_tunes_as=VIT,
    encoder_config=(("mask_ratio", 0.0),),  # pre-training masks 75 % of the patches at random
    encoder_layer="ViTMAELayer",  # the MAE's encoder and decoder blocks (pre-training); fine-tuning wraps ViTLayer
    no_weight_decay=(*VIT_NO_DECAY, "decoder_pos_embed"), pretrains_as="vit_mae",
)
# timm checkpoints through transformers' TimmWrapper (vitune.models.timm): a timm model inside, whose
# blocks and attention transformers does not name, so none of the features above.
TIMM_WRAPPER = Family("timm_wrapper", "timm", classifier_module=None)

FAMILIES: dict[str, Family] = {
    family.model_type: family
    for family in (VIT, VIT_MEAN_POOL, DEIT, BEIT, DINOV2, DINOV2_WITH_REGISTERS, SWIN, SWINV2, VIT_MAE, TIMM_WRAPPER)
}
# A model type outside the table: its leading tokens are found by trying every name the table knows, and weight
# decay spares every name the table's families spare.
KNOWN_SPECIAL_TOKENS = tuple(dict.fromkeys(name for family in FAMILIES.values() for name in family.special_tokens))
KNOWN_NO_WEIGHT_DECAY = tuple(dict.fromkeys(name for family in FAMILIES.values() for name in family.no_weight_decay))


def family_of(config) -> Family:
    """The :class:`Family` of a model config (or anything with a ``model_type``).

    A model type outside the table gets a family without layer decay, drop path, LoRA or
    explanations, whose special tokens are looked up by every known name.
    """
    model_type = getattr(config, "model_type", None) or "unknown"
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    return Family(model_type, model_type, special_tokens=KNOWN_SPECIAL_TOKENS, no_weight_decay=KNOWN_NO_WEIGHT_DECAY)


def pooled_classifier(config, pooling: str | None) -> tuple[Family, dict]:
    """The family of the classifier fine-tuned from ``config`` that reads ``pooling``, and the config values it needs.

    ``None`` keeps the checkpoint's own head (a pre-training family's: its classifier family's). BEiT switches its
    pooling in its config; ViT and the mean-pooled ViT become each other. A family that cannot read ``pooling`` is a
    :class:`UserError` naming those that can.
    """
    family = family_of(config).classifier_family
    if pooling is None or family.classifier_pooling(config) == pooling:
        return family, {}
    if family.mean_pooling_switch:
        return family, {"use_mean_pooling": pooling == MEAN}
    other = dict(family.pooled_as).get(pooling)
    if other is not None:
        return FAMILIES[other], {}
    raise UserError(f"--pooling {pooling}: a {family.name} classifier reads {family.classifier_pooling(config)}; "
                    f"mean pooling is for {model_types_with('supports_mean_pooling')} models: drop --pooling")


def families_with(feature: str) -> list[Family]:
    """The families in the table that have ``feature`` (a :class:`Family` property such as ``"supports_lora"``)."""
    has_feature = attrgetter(feature)
    return [family for family in FAMILIES.values() if has_feature(family)]


def model_types_with(feature: str) -> str:
    """The model types that have ``feature``, comma-separated, for messages (see :func:`families_with`)."""
    return ", ".join(family.model_type for family in families_with(feature))
