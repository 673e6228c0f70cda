"""The model-family table: what it claims of each family holds for a tiny model of that family."""

from __future__ import annotations

import re

import pytest
import torch
import transformers

from vitune.errors import UserError
from vitune.explain import pick_method
from vitune.models import pooling
from vitune.models.aliases import REGISTRY, load_classifier, register_vitune_models
from vitune.models.encoder import Encoder
from vitune.models.families import (
    CLS,
    CLS_AND_MEAN,
    DINOV2_WITH_REGISTERS,
    FAMILIES,
    MEAN,
    SWIN,
    SWINV2,
    TIMM_WRAPPER,
    VIT,
    VIT_MAE,
    BlockLayout,
    DropPath,
    family_of,
    model_types_with,
)
from vitune.training.layer_decay import (
    block_count,
    drop_path_overrides,
    layer_decay_groups,
    parameter_depth,
    require_layer_decay,
)

PLAIN = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
         "image_size": 32, "patch_size": 8}
STAGES = {"image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 2], "num_heads": [1, 2], "window_size": 4}
# model_type -> (classifier class, config arguments) of a tiny model of every family vitune fine-tunes
TINY = {
    "vit": ("ViTForImageClassification", PLAIN),
    "vit_mean_pool": ("MeanPooledViTForImageClassification", PLAIN),
    "deit": ("DeiTForImageClassification", PLAIN),
    "beit": ("BeitForImageClassification", {**PLAIN, "use_mean_pooling": True}),
    "dinov2": ("Dinov2ForImageClassification", PLAIN),
    "dinov2_with_registers": ("Dinov2WithRegistersForImageClassification", {**PLAIN, "num_register_tokens": 2}),
    "swin": ("SwinForImageClassification", STAGES),
    "swinv2": ("Swinv2ForImageClassification", STAGES),
}
FINE_TUNED = "vit, vit_mean_pool, deit, beit, dinov2, dinov2_with_registers, swin, swinv2"


def tiny_classifier(model_type: str, **overrides) -> torch.nn.Module:
    """A random two-output classifier of ``model_type``, built from its config (no download)."""
    register_vitune_models()
    class_name, arguments = TINY[model_type]
    config = transformers.AutoConfig.for_model(model_type, num_labels=2, **{**arguments, **overrides})
    torch.manual_seed(0)
    model_class = getattr(transformers, class_name, None) or getattr(pooling, class_name)  # vitune's own class
    return model_class(config).eval()


def module_leaves(model: torch.nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}


def test_every_family_vitune_fine_tunes_is_in_the_table():
    assert set(TINY) | {"vit_mae", "timm_wrapper"} == set(FAMILIES)
    assert model_types_with("supports_layer_decay") == FINE_TUNED
    assert model_types_with("supports_drop_path") == FINE_TUNED
    assert model_types_with("supports_lora") == FINE_TUNED
    assert model_types_with("supports_rollout") == "vit, vit_mean_pool, deit, beit, dinov2, dinov2_with_registers"
    assert model_types_with("supports_mean_pooling") == "vit, vit_mean_pool, beit, swin, swinv2, vit_mae"
    assert model_types_with("supports_pretraining") == "vit, vit_mae"
    assert model_types_with("supports_gradcam") == FINE_TUNED
    assert model_types_with("supports_fsdp") == FINE_TUNED + ", vit_mae"


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_fsdp_wraps_blocks_the_family_has(model_type):
    model = tiny_classifier(model_type)
    layer = FAMILIES[model_type].encoder_layer
    blocks = [module for module in model.modules() if type(module).__name__ == layer]
    assert len(blocks) == (3 if FAMILIES[model_type].layout is BlockLayout.STAGES else 2)  # depths [1, 2], or 2 layers


def test_fsdp_wraps_the_encoder_and_decoder_blocks_of_an_mae():
    config = transformers.ViTMAEConfig(**PLAIN, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                                       decoder_num_attention_heads=2, decoder_intermediate_size=32)
    model = transformers.ViTMAEForPreTraining(config)
    assert sum(type(module).__name__ == VIT_MAE.encoder_layer for module in model.modules()) == 3


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_lora_targets_are_modules_of_the_family(model_type):
    model = tiny_classifier(model_type)
    targets = FAMILIES[model_type].lora_modules(module_leaves(model))
    assert targets == (["query", "value"] if model_type == "swinv2" else ["q_proj", "v_proj"])
    assert set(targets) <= module_leaves(model)


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_drop_path_style_and_layer_decay_depth(model_type):
    family = FAMILIES[model_type]
    model = tiny_classifier(model_type, **drop_path_overrides(tiny_classifier(model_type).config, 0.2))
    config = model.config
    if family.drop_path is DropPath.CONFIG:
        assert config.drop_path_rate == 0.2
        assert max(m.drop_prob for m in model.modules() if hasattr(m, "drop_prob")) > 0
    else:
        assert family.drop_path is DropPath.BRANCH and not any(hasattr(m, "drop_prob") for m in model.modules())
    require_layer_decay(config)
    assert block_count(config) == (3 if family.layout is BlockLayout.STAGES else 2)
    depths = {parameter_depth(name, config) for name, _ in model.named_parameters()}
    assert depths == set(range(block_count(config) + 2))  # embeddings, every block, the top


@pytest.mark.parametrize("family", [SWIN, SWINV2])
def test_layer_decay_numbers_both_swin_generations_through_the_stages(family):
    model = tiny_classifier(family.model_type)
    prefix = model.base_model_prefix
    lr_of = {id(p): group["lr"] for group in layer_decay_groups(model, set(), 0.0, 1.0, 0.5) for p in group["params"]}
    lrs = {name: lr_of[id(p)] for name, p in model.named_parameters()}
    # L = 3 blocks: the embeddings at 0, stage 0's block and its patch merging at 1, stage 1's blocks at 2 and 3
    assert lrs[f"{prefix}.embeddings.patch_embeddings.projection.weight"] == pytest.approx(0.5**4)
    assert lrs[f"{prefix}.encoder.layers.0.downsample.reduction.weight"] == pytest.approx(0.5**3)
    assert lrs[f"{prefix}.encoder.layers.1.blocks.1.layernorm_after.weight"] == pytest.approx(0.5**1)
    assert lrs["classifier.weight"] == pytest.approx(1.0)


def test_dinov2_registers_sit_with_the_embeddings():
    config = tiny_classifier("dinov2_with_registers").config
    assert parameter_depth("dinov2_with_registers.embeddings.register_tokens", config) == 0
    assert parameter_depth("dinov2_with_registers.encoder.layer.1.norm1.weight", config) == 2
    assert parameter_depth("dinov2_with_registers.layernorm.weight", config) == 3


@pytest.mark.parametrize("model_type", ["swinv2", "dinov2_with_registers"])
def test_the_families_new_to_explain_get_class_specific_maps(model_type):
    model = tiny_classifier(model_type)
    method = pick_method(None, model.config)
    assert method.name == ("gradcam" if model_type == "swinv2" else "grad-rollout")
    maps = method.maps(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert maps.shape == ((2, 32, 32) if model_type == "swinv2" else (2, 4, 4)) and torch.isfinite(maps).all()


# What weight decay spares besides the Trainer's biases and norms (N: any block), with absolute positions switched on
SPARED = {
    "vit": {"vit.embeddings.cls_token", "vit.embeddings.position_embeddings"},
    "vit_mean_pool": {"vit.embeddings.cls_token", "vit.embeddings.position_embeddings"},
    "deit": {"deit.embeddings.cls_token", "deit.embeddings.distillation_token", "deit.embeddings.position_embeddings"},
    "beit": {"beit.embeddings.cls_token", "beit.embeddings.position_embeddings"},
    "dinov2": {"dinov2.embeddings.cls_token", "dinov2.embeddings.mask_token", "dinov2.embeddings.position_embeddings"},
    "dinov2_with_registers": {f"dinov2_with_registers.embeddings.{name}" for name in (
        "cls_token", "mask_token", "position_embeddings", "register_tokens")},
    "swin": {"swin.embeddings.position_embeddings"},
    "swinv2": {"swinv2.embeddings.position_embeddings", "swinv2.encoder.layers.N.blocks.N.attention.self.logit_scale"},
    "vit_mae": {"vit.embeddings.cls_token", "vit.embeddings.position_embeddings", "decoder.mask_token",
                "decoder.decoder_pos_embed"},
}
ABSOLUTE_POSITIONS = {"beit": {"use_absolute_position_embeddings": True, "use_relative_position_bias": True},
                      "swin": {"use_absolute_embeddings": True}, "swinv2": {"use_absolute_embeddings": True}}


@pytest.mark.parametrize("model_type", sorted(SPARED))
def test_weight_decay_spares_the_tokens_and_position_embeddings(model_type, tmp_path):
    from transformers import Trainer, TrainingArguments

    from vitune.training.trainer import BaseTrainer

    if model_type == "vit_mae":
        model = transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(
            **PLAIN, decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
            decoder_intermediate_size=32))
    else:
        model = tiny_classifier(model_type, **ABSOLUTE_POSITIONS.get(model_type, {}))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = BaseTrainer(model=model, args=args, device_inputs=None)
    trainers_own = set(Trainer.get_decay_parameter_names(trainer, model))
    decayed = set(trainer.get_decay_parameter_names(model))
    assert decayed < trainers_own
    assert {re.sub(r"\.\d+\.", ".N.", name) for name in trainers_own - decayed} == SPARED[model_type]


def test_classifier_pooling():
    assert VIT.classifier_pooling(tiny_classifier("vit").config) == CLS
    assert FAMILIES["beit"].classifier_pooling(tiny_classifier("beit").config) == MEAN
    assert FAMILIES["beit"].classifier_pooling(tiny_classifier("beit", use_mean_pooling=False).config) == CLS
    assert DINOV2_WITH_REGISTERS.classifier_pooling(tiny_classifier("dinov2_with_registers").config) == CLS_AND_MEAN


def test_a_model_type_outside_the_table_has_no_family_feature():
    convnext = transformers.ConvNextConfig()
    family = family_of(convnext)
    assert (family.model_type, family.layout, family.drop_path, family.lora_targets) == ("convnext", None, None, ())
    assert family.special_tokens == ("cls_token", "distillation_token", "register_tokens")
    with pytest.raises(UserError, match=f"--layer-decay supports {FINE_TUNED} models, not convnext"):
        require_layer_decay(convnext)
    with pytest.raises(UserError, match=f"--drop-path applies to {FINE_TUNED} models, not convnext"):
        drop_path_overrides(convnext, 0.1)


def test_every_alias_names_its_family():
    assert all(alias.family is FAMILIES[alias.family.model_type] for alias in REGISTRY.values())
    assert REGISTRY["swin-tiny"].family is SWIN
    assert REGISTRY["timm-vit-base-mae"].family is TIMM_WRAPPER


@pytest.fixture(scope="module")
def tiny_mae(tmp_path_factory):
    """A random ViT-MAE pre-training checkpoint (encoder and decoder) with its image processor."""
    path = tmp_path_factory.mktemp("tiny-mae")
    config = transformers.ViTMAEConfig(**PLAIN, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                                       decoder_num_attention_heads=2, decoder_intermediate_size=32)
    torch.manual_seed(0)
    transformers.ViTMAEForPreTraining(config).save_pretrained(path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def test_an_mae_checkpoint_fine_tunes_as_a_vit_with_its_pre_trained_encoder(tiny_mae):
    pre_trained = transformers.ViTMAEForPreTraining.from_pretrained(tiny_mae).state_dict()
    model = load_classifier(str(tiny_mae), "multi_label", ["a", "b", "c"])
    assert type(model).__name__ == "ViTForImageClassification" and model.config.model_type == "vit"
    assert model.config.num_labels == 3 and not hasattr(model.config, "mask_ratio")
    weights = model.state_dict()
    assert {name for name in weights if name not in pre_trained} == {"classifier.weight", "classifier.bias"}
    assert all(torch.equal(weights[name], pre_trained[name]) for name in weights if name in pre_trained)
    mae_config = transformers.AutoConfig.from_pretrained(tiny_mae)
    assert family_of(mae_config) is VIT_MAE and VIT_MAE.classifier_family is VIT
    require_layer_decay(mae_config)  # the ViT it fine-tunes as numbers its blocks
    assert drop_path_overrides(mae_config, 0.1) == {}  # ViT: added after the residual branch


def test_an_mae_encoder_embeds_every_patch(tiny_mae):
    encoder = Encoder(tiny_mae, device="cpu")
    pixels = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8).numpy()
    first, _ = encoder.encode(pixels, pooling="mean")
    again, _ = encoder.encode(pixels, pooling="mean")
    assert encoder.net.config.mask_ratio == 0.0 and encoder.num_special_tokens == 1
    assert first.shape == (2, 32)
    assert first == pytest.approx(again, abs=1e-5)  # no random masking: the same image, the same embedding
