"""The fine-tuning recipe's flags, each for what it changes: layer decay, drop path, EMA, mixing, compile, presets."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

import vitune.training.fine_tune as train_module
from vitune.config import TrainConfig
from vitune.errors import UserError
from vitune.tasks import get_task
from vitune.training.ema import RAW_WEIGHTS
from vitune.training.fine_tune import build_trainer
from vitune.training.layer_decay import drop_path_overrides, layer_decay_groups, require_layer_decay
from vitune.training.mixing import TargetMixer, paste_box


def config_for(data, model, out, **kwargs) -> TrainConfig:
    """Tiny, fast settings: 6 steps an epoch."""
    return TrainConfig(data=str(data), model=str(model), out=str(out), **{"batch_size": 8, **kwargs})


def group_lr(optimizer, model) -> dict[str, float]:
    """Parameter name -> the LR of its optimizer group."""
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    return {name: lr_of[id(p)] for name, p in model.named_parameters()}


def test_layer_decay_gives_each_vit_depth_its_lr(tiny_vit, dataset_dir_factory, tmp_path):
    trainer = build_trainer(config_for(dataset_dir_factory(), tiny_vit, tmp_path / "run", lr=1e-3, layer_decay=0.5,
                                       weight_decay=0.05))
    lrs = group_lr(trainer.create_optimizer(), trainer.model)
    # 2 blocks: embeddings at depth 0, block i at i + 1, norm and head at 3; lr * 0.5 ** (3 - depth)
    assert lrs["vit.embeddings.patch_embeddings.projection.weight"] == pytest.approx(1e-3 * 0.125)
    assert lrs["vit.embeddings.cls_token"] == pytest.approx(1e-3 * 0.125)
    assert lrs["vit.layers.0.attention.q_proj.weight"] == pytest.approx(1e-3 * 0.25)
    assert lrs["vit.layers.1.mlp.fc2.weight"] == pytest.approx(1e-3 * 0.5)
    assert lrs["vit.layernorm.weight"] == lrs["classifier.weight"] == pytest.approx(1e-3)
    decay_of = {id(p): group["weight_decay"] for group in trainer.optimizer.param_groups for p in group["params"]}
    decays = {name: decay_of[id(p)] for name, p in trainer.model.named_parameters()}
    assert decays["classifier.bias"] == 0.0  # biases and norms keep no weight decay, as the Trainer's own groups
    assert decays["vit.embeddings.cls_token"] == decays["vit.embeddings.position_embeddings"] == 0.0  # as MAE's
    assert decays["vit.layers.0.attention.q_proj.weight"] == decays["classifier.weight"] == 0.05


def test_layer_decay_numbers_swin_blocks_through_the_stages():
    from transformers import SwinConfig, SwinForImageClassification

    model = SwinForImageClassification(SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 2],
                                                  num_heads=[1, 2], window_size=2))
    groups = layer_decay_groups(model, set(), 0.0, 1.0, 0.5)
    lrs = group_lr(torch.optim.SGD(groups, lr=1.0), model)
    # L = 3 blocks; stage 0's patch merging sits with its last block
    assert lrs["swin.embeddings.patch_embeddings.projection.weight"] == pytest.approx(0.5**4)
    assert lrs["swin.encoder.layers.0.blocks.0.attention.q_proj.weight"] == pytest.approx(0.5**3)
    assert lrs["swin.encoder.layers.0.downsample.reduction.weight"] == pytest.approx(0.5**3)
    assert lrs["swin.encoder.layers.1.blocks.1.attention.q_proj.weight"] == pytest.approx(0.5**1)
    assert lrs["classifier.weight"] == pytest.approx(1.0)


def test_drop_path_is_set_in_the_model_config(tiny_vit, dataset_dir_factory, tmp_path):
    from transformers.models.beit.modeling_beit import BeitDropPath

    trainer = build_trainer(config_for(dataset_dir_factory(), tiny_vit, tmp_path / "run", drop_path=0.2))
    assert trainer.model.config.drop_path_rate == 0.2
    rates = [m.drop_prob for m in trainer.model.modules() if isinstance(m, BeitDropPath)]
    assert rates == pytest.approx([0.0, 0.2])  # rising linearly over the 2 blocks
    x = torch.randn(4, 3, 32, 32)
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(trainer.model(pixel_values=x).logits, trainer.model(pixel_values=x).logits)


def test_drop_path_goes_into_the_config_of_models_built_with_it_and_is_refused_elsewhere():
    from transformers import ConvNextConfig, SwinConfig

    assert drop_path_overrides(SwinConfig(), 0.1) == {"drop_path_rate": 0.1}
    with pytest.raises(UserError, match="--drop-path applies to"):
        drop_path_overrides(ConvNextConfig(), 0.1)
    with pytest.raises(UserError, match="--layer-decay supports"):
        require_layer_decay(ConvNextConfig())


@pytest.mark.slow
def test_ema_weights_differ_from_the_raw_ones_and_are_the_ones_saved(tiny_vit, dataset_dir_factory, tmp_path,
                                                                    monkeypatch):
    built = []
    monkeypatch.setattr(train_module, "build_trainer", lambda config: built.append(build_trainer(config)) or built[-1])
    run = tmp_path / "run"
    train_module.train(config_for(dataset_dir_factory(), tiny_vit, run, epochs=1, lr=1e-2, ema=0.5))
    ema = {k: v for k, v in built[0].ema.state_dict().items()}
    saved = load_file(str(run / "model" / "model.safetensors"))
    raw = load_file(str(next((run / "checkpoints").glob("checkpoint-*")) / RAW_WEIGHTS))
    name = "classifier.weight"
    key = next(k for k in saved if k.endswith(name))
    assert not torch.allclose(raw[name], ema[name])  # the EMA lags the optimised weights
    assert torch.allclose(saved[key], ema[name])  # and it is what model/ holds


def test_mixup_soft_targets_sum_as_the_mix_of_both_images():
    torch.manual_seed(0)
    single = TargetMixer(get_task("single_label"), 4, smoothing=0.1, mixup=1.0)
    pixels, labels = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    mixed, targets = single(pixels, labels)
    assert targets.sum(dim=1) == pytest.approx(torch.ones(6))
    lam = float((mixed[0] - pixels[5]).flatten()[0] / (pixels[0] - pixels[5]).flatten()[0])
    expected = (torch.nn.functional.one_hot(labels, 4) * 0.9 + 0.025)
    assert targets == pytest.approx(expected * lam + expected.flip(0) * (1 - lam), abs=1e-5)

    multi = TargetMixer(get_task("multi_label"), 3, mixup=1.0)
    y = torch.tensor([[1.0, 0.0, math.nan], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    _, soft = multi(torch.rand(4, 3, 8, 8), y)
    assert torch.isnan(soft[:, 2]).tolist() == [True, False, False, True]  # unknown stays unknown for the loss
    finite = soft[1:3]
    assert ((finite >= 0) & (finite <= 1)).all()
    assert finite.sum() == pytest.approx(y[1:3].sum())  # each pair's labels split between its two images


def test_cutmix_weight_is_the_pasted_area():
    torch.manual_seed(1)
    pixels = torch.stack([torch.zeros(1, 16, 16), torch.ones(1, 16, 16)])
    mixed, lam = paste_box(pixels, 0.7)
    assert float((mixed[0] == 1).float().mean()) == pytest.approx(1 - lam)
    assert float((mixed[1] == 0).float().mean()) == pytest.approx(1 - lam)


def test_recipe_presets_fill_what_is_not_given():
    base = {"data": "d", "model": "m", "out": "o"}
    strong = TrainConfig.from_dict({**base, "recipe": "strong", "epochs": 2})
    assert (strong.layer_decay, strong.drop_path, strong.augment, strong.weight_decay) == (0.55, 0.2, "strong", 0.05)
    assert strong.epochs == 2  # given wins over the preset
    seed = TrainConfig.from_dict({**base, "recipe": "seed"})
    assert seed == TrainConfig(**base, recipe="seed")  # the seeds' recipe is vitune's defaults
    with pytest.raises(UserError, match="--recipe"):
        TrainConfig.from_dict({**base, "recipe": "fast"})


@pytest.mark.parametrize("flag,value", [("layer_decay", 0.0), ("ema", 1.0), ("drop_path", 1.0), ("mixup", -1.0)])
def test_recipe_settings_out_of_range_are_user_errors(flag, value):
    with pytest.raises(UserError, match=f"--{flag.replace('_', '-')}"):
        TrainConfig(data="d", model="m", out="o", **{flag: value})


def test_compile_and_gradient_checkpointing_run_a_training_step_on_the_cpu(tiny_vit, dataset_dir_factory, tmp_path,
                                                                          monkeypatch):
    def aot_eager(config, task, model_config):  # dynamo traces and AOTAutograd splits the graph; inductor's C++ build takes minutes
        args = training_arguments(config, task, model_config)
        args.torch_compile_backend = "aot_eager"
        return args

    training_arguments = train_module.training_arguments
    monkeypatch.setattr(train_module, "training_arguments", aot_eager)
    trainer = build_trainer(config_for(dataset_dir_factory(), tiny_vit, tmp_path / "run", compile=True, warmup=0.0,
                                       gradient_checkpointing=True, max_steps=1, augment="strong"))
    before = trainer.model.classifier.weight.detach().clone()
    trainer.train()
    assert trainer.args.torch_compile and trainer.model.is_activation_checkpointing
    assert trainer.model_wrapped is not trainer.model  # the compiled module ran the step
    assert trainer.state.global_step == 1
    assert not torch.equal(before, trainer.accelerator.unwrap_model(trainer.model).classifier.weight)


def test_ema_swaps_in_for_evaluation_and_resumes_from_a_checkpoint(tmp_path):
    from vitune.training.ema import WeightEma, save_raw_weights

    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightEma(model, decay=0.5)
    ema.update(model)  # first update: the EMA starts at the weights
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update(model)  # 0.5 * 0 + 0.5 * 2
    assert ema.state_dict()["weight"].tolist() == [[1.0, 1.0]]
    with ema.swapped(model) as raw:
        assert model.weight.tolist() == [[1.0, 1.0]] and raw["weight"].tolist() == [[2.0, 2.0]]
        save_raw_weights(raw, tmp_path)
    assert model.weight.tolist() == [[2.0, 2.0]]  # the raw weights are back after the block

    restored = torch.nn.Linear(2, 1)
    restored.load_state_dict(ema.state_dict())  # what a checkpoint's model weights hold
    again = WeightEma(restored, decay=0.5)
    again.resume(restored, tmp_path)
    assert restored.weight.tolist() == [[2.0, 2.0]] and again.state_dict()["weight"].tolist() == [[1.0, 1.0]]
    with torch.no_grad():
        restored.weight.fill_(4.0)
    again.update(restored)  # continues the average, not a fresh start
    assert again.state_dict()["weight"].tolist() == [[2.5, 2.5]]
