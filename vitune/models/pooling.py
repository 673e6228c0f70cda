"""vitune's mean-pooled ViT: the classifier head MAE and EVA-X fine-tune with, as a transformers model.

transformers' ``ViTForImageClassification`` reads the [CLS] token. MAE (``models_vit.py`` with
``global_pool``), EVA-X and timm's ``global_pool="avg"`` with ``fc_norm`` fine-tune on the mean of the
patch tokens instead, normalised by a LayerNorm after pooling (the last block's tokens are not
normalised first). BEiT has that head in transformers (``use_mean_pooling``, ``BeitPooler``), ViT has
not, so :class:`MeanPooledViTForImageClassification` is ViT's classifier with BEiT's pooler: the
weights of a ViT or MAE encoder load as they are, the final token LayerNorm (unused here) is left out,
and the pooler's LayerNorm and the classifier start new.

Its config has its own ``model_type`` (the family table's ``vit_mean_pool``), so transformers never
mistakes a saved one for a [CLS]-pooled ViT: it loads through the Auto classes (``pipeline()``
included) once :func:`register_auto_classes` has run, which vitune's loaders do (the model card says so for
``pipeline()``); without it,
transformers says it does not know the model type instead of loading it wrong. Checked: timm's
TimmWrapper would load timm's mean-pooled ViT without vitune, but its weights use timm's names,
which neither vitune's layer decay, LoRA nor explanations know.
"""

from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, ViTConfig, ViTModel
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.models.beit.modeling_beit import BeitPooler
from transformers.models.vit.modeling_vit import ViTForImageClassification

from vitune.models.families import VIT_MEAN_POOL

# Left out of a mean-pooled ViT when a ViT checkpoint loads into it: the final LayerNorm over the tokens.
TOKEN_NORM = r"(^|\.)layernorm\.(weight|bias)$"


@strict
class MeanPooledViTConfig(ViTConfig):
    """A ViT config whose classifier reads the mean of the patch tokens, then a LayerNorm."""

    model_type = VIT_MEAN_POOL.model_type
    use_mean_pooling: bool = True  # what BEiT's pooler reads


class MeanPooledViTModel(ViTModel):
    """ViT's encoder pooled as MAE fine-tunes it: no LayerNorm over the tokens, their mean normalised instead.

    ``last_hidden_state`` holds the last block's tokens, ``pooler_output`` their patch mean after the
    pooler's LayerNorm (what the classifier reads).
    """

    config_class = MeanPooledViTConfig
    _keys_to_ignore_on_load_unexpected = [TOKEN_NORM]

    def __init__(self, config: MeanPooledViTConfig, add_pooling_layer: bool = True, use_mask_token: bool = False):
        super().__init__(config, add_pooling_layer=False, use_mask_token=use_mask_token)
        self.layernorm = torch.nn.Identity()
        self.pooler = BeitPooler(config) if add_pooling_layer else None
        self.post_init()


class MeanPooledViTForImageClassification(ViTForImageClassification):
    """ViT image classification on the mean-pooled head (:class:`MeanPooledViTModel`)."""

    config_class = MeanPooledViTConfig
    _keys_to_ignore_on_load_unexpected = [TOKEN_NORM]

    def __init__(self, config: MeanPooledViTConfig):
        super().__init__(config)
        self.vit = MeanPooledViTModel(config)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                interpolate_pos_encoding: bool | None = None, attention_mask: torch.Tensor | None = None,
                **kwargs) -> ImageClassifierOutput:
        """Logits of the pooled patch tokens (and the loss when ``labels`` are given), as ViT's classifier."""
        outputs = self.vit(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding,
                           attention_mask=attention_mask, **kwargs)
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                     attentions=outputs.attentions)


def register_auto_classes() -> None:
    """Make transformers' ``AutoConfig``, ``AutoModel`` and ``AutoModelForImageClassification`` (and so
    ``pipeline("image-classification")``) load a mean-pooled ViT. Safe to call again.

    Its encoder also takes ViT's checkpoint weight names (transformers keys that renaming by class name).
    """
    from transformers.conversion_mapping import (
        get_checkpoint_conversion_mapping,
        register_checkpoint_conversion_mapping,
    )

    vit_names = get_checkpoint_conversion_mapping(ViTModel.__name__)
    register_checkpoint_conversion_mapping(MeanPooledViTModel.__name__, vit_names, overwrite=True)
    AutoConfig.register(MeanPooledViTConfig.model_type, MeanPooledViTConfig, exist_ok=True)
    AutoModel.register(MeanPooledViTConfig, MeanPooledViTModel, exist_ok=True)
    AutoModelForImageClassification.register(MeanPooledViTConfig, MeanPooledViTForImageClassification, exist_ok=True)
