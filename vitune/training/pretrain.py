"""`vitune pretrain`: masked-autoencoder pre-training (MAE) on the user's own unlabeled images.

``transformers.ViTMAEForPreTraining`` trained on the same Trainer path as `vitune train`
(:mod:`vitune.training.fine_tune`): uint8 batches cropped and normalised on the device, resume, DDP and
DeepSpeed, progress lines, ``--report-to`` and one writer per RUN_DIR. Where the weights start
(``--model``):

* an MAE checkpoint (``facebook/vit-mae-base``, a previous ``RUN_DIR/mae``) is continued, decoder included;
* a ViT checkpoint or alias gives the MAE its encoder, with a new decoder (``--decoder-width``, ``--decoder-depth``;
  its position embeddings are kept, frozen as MAE's fixed ones are);
* a model config (a folder with ``config.json`` and no weights, or the JSON file) is a random start,
  with the 2-D sine-cosine position embeddings MAE fixes.

``--data`` is a DATASET_DIR (its ``train`` split pre-trains, ``validation`` is held back; labels are not
read) or a plain folder of images or DICOMs, decoded once into ``RUN_DIR/data``
(:mod:`vitune.data.unlabeled`: bad files skipped with their reason). The held-back images get a
reconstruction loss after each epoch, each with the same mask every time (so the epochs compare), and
the grid of ``plots/reconstructions.png``.

RUN_DIR ends up with ``mae/`` (the whole MAE, to continue), ``model/`` (the encoder as a ViT checkpoint
with its image processor: ``vitune train --model RUN_DIR`` fine-tunes it, ``--pooling mean`` as MAE
does), ``metrics.json`` (``history``: each epoch's ``train_loss`` and held-back ``eval_loss``),
``plots/`` (``loss.png``, ``lr.png``, ``reconstructions.png``), ``config.yaml`` and ``checkpoints/``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vitune.config import PretrainConfig
from vitune.config.pretrain import DECODER_DEPTH, DECODER_MLP_RATIO, DECODER_WIDTH, decoder_heads
from vitune.data.dataset_dir import INFO_FILE, DatasetInfo, load_dataset_dir, require_split, uint8_rows
from vitune.data.unlabeled import prepare_unlabeled
from vitune.errors import UserError
from vitune.models.aliases import (
    Preprocessing,
    fine_tuning_config,
    load_image_processor,
    load_model_config,
    resolve_model,
    resolve_preprocessing,
)
from vitune.models.families import FAMILIES, VIT_MAE, family_of, model_types_with
from vitune.models.forward import normalize, pixel_batches
from vitune.storage.atomic import replace_dir, write_atomic
from vitune.storage.layout import RunDir
from vitune.training.augment import DeviceInputs, resized_crop
from vitune.training.distributed import whole_models
from vitune.training.fine_tune import (
    MAE_STAGING,
    MODEL_STAGING,
    add_run_callbacks,
    checkpoint_to_resume,
    epoch_history,
    run_processor,
    throughput,
    trainer_arguments,
    write_curves,
    writing_run,
)
from vitune.training.lora import parameter_counts
from vitune.training.model_card import CARD_FILE, pretraining_card
from vitune.training.trainer import BaseTrainer, Uint8Collator

log = logging.getLogger(__name__)

TASK = "masked_image_modeling"  # metrics.json's "task" of a pre-training run
GRID_IMAGES = 6  # held-back images in plots/reconstructions.png
WEIGHT_FILES = ("*.safetensors", "*.bin")


@dataclass
class PretrainResult:
    """What a finished pre-training produced: its directory and the contents of ``metrics.json``."""

    run_dir: Path
    metrics: dict


@dataclass
class MaeStart:
    """Where the MAE's weights start: the checkpoint and how it is used, the MAE's config, the preprocessing."""

    kind: str  # "continued" (an MAE), "encoder" (a ViT's, new decoder) or "random" (a config)
    source: str | None  # the checkpoint (None: a random start)
    config: object  # the ViTMAEConfig to build or load with
    prep: Preprocessing
    processor: object  # the image processor saved with mae/ and model/


@dataclass
class PretrainData:
    """The images of a pre-training run: the training split, the held-back one (or None) and their description."""

    info: DatasetInfo
    train: object
    held_back: object | None


class MaeTrainer(BaseTrainer):
    """:class:`~vitune.training.trainer.BaseTrainer` whose loss is the MAE's reconstruction loss.

    Training batches are randomly cropped (``device_inputs``) and randomly masked by the model; each
    evaluation masks the held-back images with the same noise (drawn from ``args.seed``), so their loss
    compares from epoch to epoch. ``start`` and ``data`` say where the weights started and what the images are.
    """

    def __init__(self, *args, start: MaeStart, data: PretrainData, **kwargs):
        super().__init__(*args, **kwargs)
        self.start = start
        self.data = data
        self._eval_noise = torch.Generator()

    def evaluate(self, *args, **kwargs):
        """The Trainer's evaluation, every held-back image masked as in every other evaluation."""
        self._eval_noise.manual_seed(self.args.seed)
        return super().evaluate(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Reconstruction loss of the batch prepared on the device; training losses feed the divergence check."""
        pixels, _ = self.device_inputs(inputs["pixel_values"], None, train=model.training)
        noise = None if model.training else self._noise_for(pixels, model)
        outputs = model(pixel_values=pixels, noise=noise)
        if model.training:
            self.loss_tracker.add(outputs.loss, len(pixels))
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The held-back loss only: MAE's outputs are reconstructions, not predictions to score."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _noise_for(self, pixels: torch.Tensor, model) -> torch.Tensor:
        """The masking noise of the next evaluation batch (``[B, patches]``), from the evaluation's generator."""
        patches = patch_count(self.accelerator.unwrap_model(model).config, pixels.shape[-1])
        return torch.rand(len(pixels), patches, generator=self._eval_noise).to(pixels.device)


def patch_count(config, image_size: int) -> int:
    """Patches of a square ``image_size`` image for a ViT-style ``config``."""
    patch = config.patch_size[0] if isinstance(config.patch_size, (list, tuple)) else config.patch_size
    return (image_size // int(patch)) ** 2


def _is_config_only(model: str) -> bool:
    """``--model`` is a model config: a JSON file, or a local folder with ``config.json`` and no weights."""
    path = Path(model).expanduser()
    if path.is_file():
        return path.suffix.lower() == ".json"
    folder = Path(resolve_model(model))
    return folder.is_dir() and not any(any(folder.glob(pattern)) for pattern in WEIGHT_FILES)


def _model_config(model: str, trust_remote_code: bool):
    """The config of ``--model``: a checkpoint's, a config folder's or a config JSON file's."""
    from transformers import AutoConfig

    path = Path(model).expanduser()
    if path.is_file():
        try:
            return AutoConfig.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise UserError(f"--model {model} is not a model config: {str(exc).splitlines()[0]}") from exc
    return load_model_config(model, trust_remote_code)


def _mae_config(model_config, config: PretrainConfig, image_size: int, continued: bool):
    """The ViTMAEConfig to pre-train: ``model_config``'s encoder (and, continued, its decoder) with this run's
    masking and loss."""
    training = {"mask_ratio": config.mask_ratio, "norm_pix_loss": config.norm_pix_loss}
    if continued:
        mae = model_config.__class__.from_dict({**model_config.to_dict(), **training})
        _require_own_decoder(mae, config)
        return mae
    width = config.decoder_width or DECODER_WIDTH
    decoder = {"decoder_hidden_size": width, "decoder_num_hidden_layers": config.decoder_depth or DECODER_DEPTH,
               "decoder_num_attention_heads": decoder_heads(width),
               "decoder_intermediate_size": width * DECODER_MLP_RATIO, "image_size": image_size}
    mae_family = FAMILIES[family_of(model_config).pretrains_as]
    return fine_tuning_config(model_config, mae_family, {**decoder, **training})


def _require_own_decoder(mae, config: PretrainConfig) -> None:
    """A continued MAE keeps its decoder: ``--decoder-width``/``--decoder-depth`` may only repeat it."""
    for flag, given, own in (("--decoder-width", config.decoder_width, mae.decoder_hidden_size),
                             ("--decoder-depth", config.decoder_depth, mae.decoder_num_hidden_layers)):
        if given is not None and given != own:
            raise UserError(f"{flag} {given}: {config.model} is an MAE whose decoder it continues ({flag} {own}); "
                            f"drop {flag}, or start a new decoder from its encoder")


def _preprocessing(config: PretrainConfig, image_size: int) -> tuple[Preprocessing, object]:
    """Normalisation from ``--model``'s own processor (0.5/0.5 without one, as a random ViT's) at ``image_size``,
    and the image processor saved with the run (resizing straight to ``image_size``, as `vitune train` saves it)."""
    from transformers import ViTImageProcessor

    if Path(config.model).expanduser().is_file():  # a config file: no processor beside it
        prep = Preprocessing(image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    else:
        own = resolve_preprocessing(config.model, config.trust_remote_code)
        prep = Preprocessing(image_size, own.mean, own.std)
    try:
        load_image_processor(config.model, config.trust_remote_code)
    except UserError:
        size = {"height": image_size, "width": image_size}
        return prep, ViTImageProcessor(size=size, image_mean=list(prep.mean), image_std=list(prep.std))
    return prep, run_processor(config.model, image_size, config.trust_remote_code)


def mae_start(config: PretrainConfig, image_size: int | None) -> MaeStart:
    """Where ``config.model``'s weights start the MAE (see the module docstring); ``image_size`` is the data's
    (None: the model's). A family `vitune pretrain` cannot start from, or a checkpoint at another image size,
    is a :class:`UserError`."""
    model_config = _model_config(config.model, config.trust_remote_code)
    family = family_of(model_config)
    if not family.supports_pretraining:
        raise UserError(f"--model {config.model} is a {family.name} model: `vitune pretrain` starts from "
                        f"{model_types_with('supports_pretraining')} models (checkpoints or configs)")
    random = _is_config_only(config.model)
    model_size = int(model_config.image_size)
    size = image_size or model_size
    if not random and size != model_size:
        raise UserError(f"the images are {size}px but {config.model} takes {model_size}px: pre-train at its size "
                        f"(--image-size {model_size}, or a DATASET_DIR prepared at it) or start from a model config")
    continued = family.model_type == family.pretrains_as and not random
    kind = "random" if random else ("continued" if continued else "encoder")
    prep, processor = _preprocessing(config, size)
    source = None if random else resolve_model(config.model)
    return MaeStart(kind, source, _mae_config(model_config, config, size, continued), prep, processor)


def build_mae(start: MaeStart) -> torch.nn.Module:
    """The ``ViTMAEForPreTraining`` to train: loaded (continued), built with a checkpoint's encoder, or random."""
    from transformers import AutoModel, ViTMAEForPreTraining

    if start.kind == "continued":
        return ViTMAEForPreTraining.from_pretrained(start.source, config=start.config, use_safetensors=True)
    mae = ViTMAEForPreTraining(start.config)
    if start.kind == "encoder":
        encoder = AutoModel.from_pretrained(start.source, add_pooling_layer=False, use_safetensors=True)
        mae.vit.load_state_dict(encoder.state_dict(), strict=True)  # the same names: ViT-MAE's encoder is a ViT
    return mae


def pretraining_images(config: PretrainConfig, args) -> PretrainData:
    """The training and held-back images of ``--data``: a DATASET_DIR's splits, or a plain folder decoded into
    ``RUN_DIR/data`` (by the main process first; the others then find it cached)."""
    data = Path(config.data).expanduser()
    if (data / INFO_FILE).is_file():
        ds, info = load_dataset_dir(data)
        if config.image_size is not None and config.image_size != info.image_size:
            raise UserError(f"--image-size {config.image_size} is for a folder of images: {data} holds "
                            f"{info.image_size}px images (prepare it again at another size)")
    else:
        size = config.image_size or int(_model_config(config.model, config.trust_remote_code).image_size)
        with args.main_process_first(local=False, desc="decoding the images"):
            prepare_unlabeled(data, RunDir(config.out).data, size, config.val_fraction, config.seed, config.workers)
        ds, info = load_dataset_dir(RunDir(config.out).data)
    train = require_split(ds, "train", data)
    held_back = ds["validation"] if "validation" in ds and len(ds["validation"]) else None
    return PretrainData(info, train, held_back)


def pretrain_arguments(config: PretrainConfig, held_back: bool):
    """The run's ``TrainingArguments``: the recipe's AdamW betas and LR, the held-back loss each epoch, the last
    epoch's model kept (MAE keeps the last: the reconstruction loss is no model selection)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    beta1, beta2 = config.adam_betas
    return trainer_arguments(
        config,
        VIT_MAE,
        learning_rate=config.learning_rate(world_size),
        adam_beta1=beta1,
        adam_beta2=beta2,
        eval_strategy="epoch" if held_back else "no",
        label_names=[],
        prediction_loss_only=True,
    )


def build_pretrainer(config: PretrainConfig) -> MaeTrainer:
    """The :class:`MaeTrainer` of ``config``, ready for ``.train()``: the MAE, its images, the crop on the device."""
    from transformers import set_seed

    args = pretrain_arguments(config, held_back=True)  # its main_process_first decodes a folder once
    data = pretraining_images(config, args)
    if data.held_back is None:  # a DATASET_DIR without a validation split: nothing to evaluate each epoch
        args = pretrain_arguments(config, held_back=False)
    start = mae_start(config, data.info.image_size)
    set_seed(config.seed)  # a new decoder (or a random start) is initialised here
    crop = resized_crop(data.info.image_size, config.crop_scale, config.augment_hflip)
    trainer = MaeTrainer(
        model=build_mae(start),
        args=args,
        train_dataset=uint8_rows(data.train, labels=False),
        eval_dataset=None if data.held_back is None else uint8_rows(data.held_back, labels=False),
        data_collator=Uint8Collator(None),
        processing_class=start.processor,
        device_inputs=DeviceInputs(start.prep, transform=crop),
        start=start,
        data=data,
    )
    add_run_callbacks(trainer, config)
    return trainer


def pretrain(config: PretrainConfig) -> PretrainResult:
    """Pre-train a masked autoencoder on ``config.data`` and fill ``config.out`` (RUN_DIR); see the module docstring.

    ``config.resume`` continues from the last checkpoint in ``RUN_DIR/checkpoints``. One process at a time
    writes a RUN_DIR; ``mae/`` and ``model/`` are renamed into place whole.
    """
    with writing_run(config) as run:
        return _pretrain(config, run)


def _pretrain(config: PretrainConfig, run: RunDir) -> PretrainResult:
    resume_from = checkpoint_to_resume(config)
    trainer = build_pretrainer(config)
    data, start = trainer.data, trainer.start
    if trainer.is_world_process_zero():
        run.root.mkdir(parents=True, exist_ok=True)
        config.save(run.config)
    log.info("pre-training an MAE (%s from %s) on %s: %d images, %d held back -> %s", start.kind, config.model,
             config.data, len(data.train), 0 if data.held_back is None else len(data.held_back), run.root)
    trainer.train(resume_from_checkpoint=resume_from)
    final = trainer.evaluate() if data.held_back is not None else {}
    _save_mae(trainer, run)
    document = {}
    if trainer.is_world_process_zero():
        document = metrics_document(config, trainer, final)
        with whole_models(trainer.args):  # this process alone reads the saved MAE back and builds the encoder
            mae = _saved_mae(run)
            save_encoder(mae, run, start.processor, pretraining_card(config, document))
        write_atomic(run.metrics, json.dumps(document, indent=2) + "\n")
        write_curves(run, trainer.state.log_history)
        grid_split = data.train if data.held_back is None else data.held_back
        write_reconstructions(mae, grid_split, start.prep, run.plots / "reconstructions.png", config.seed)
    return PretrainResult(run.root, document)


def _save_mae(trainer: MaeTrainer, run: RunDir) -> None:
    """``mae/``: the whole MAE and its processor, written whole beside the run (DeepSpeed shards gathered), then
    renamed into place."""
    staging = run.root / MAE_STAGING
    try:
        trainer.save_model(str(staging))  # every process: gathers DeepSpeed shards, rank 0 writes
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle, not needed to load
        replace_dir(staging, run.mae)


def _saved_mae(run: RunDir) -> torch.nn.Module:
    """The MAE just saved in ``mae/``, whole in this process (also under ZeRO-3), in eval mode."""
    from transformers import ViTMAEForPreTraining

    return ViTMAEForPreTraining.from_pretrained(str(run.mae), use_safetensors=True).eval()


def save_encoder(mae: torch.nn.Module, run: RunDir, processor, card: str) -> Path:
    """``model/``: the MAE's encoder as a checkpoint of the family it fine-tunes as (ViT, no pooler), with the
    image processor and the model card ``card``; the decoder is left out. Written beside the run, then renamed
    into place."""
    from transformers import AutoModel

    family = family_of(mae.config).fine_tunes_as
    encoder = AutoModel.from_config(fine_tuning_config(mae.config, family, {}), add_pooling_layer=False)
    encoder.load_state_dict(mae.vit.state_dict(), strict=True)
    staging = run.root / MODEL_STAGING
    try:
        encoder.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / CARD_FILE).write_text(card)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_dir(staging, run.model)
    return run.model


def metrics_document(config: PretrainConfig, trainer: MaeTrainer, final: dict) -> dict:
    """The ``metrics.json`` content of a pre-training run (``history`` as `vitune train` writes it)."""
    train_seconds, samples_per_second = throughput(trainer.state.log_history)
    data, start = trainer.data, trainer.start
    held_back = 0 if data.held_back is None else len(data.held_back)
    return {
        "task": TASK,
        "split": "validation",
        "num_samples": held_back,
        "metrics": {"reconstruction_loss": final.get("eval_loss")},
        "history": epoch_history(trainer.state.log_history),
        "train_seconds": round(train_seconds, 3),
        "samples_per_second": round(samples_per_second, 3),
        "parameters": parameter_counts(trainer.model),
        "pretraining": {
            "start": start.kind,
            "model": config.model,
            "image_size": data.info.image_size,
            "train_images": len(data.train),
            "held_back_images": held_back,
            "skipped": data.info.skipped,
            "mask_ratio": config.mask_ratio,
            "norm_pix_loss": config.norm_pix_loss,
            "decoder_width": start.config.decoder_hidden_size,
            "decoder_depth": start.config.decoder_num_hidden_layers,
            "learning_rate": trainer.args.learning_rate,
            "total_batch": trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
            * trainer.args.world_size,
        },
    }


@torch.no_grad()
def reconstructions(mae: torch.nn.Module, pixels: np.ndarray, prep: Preprocessing, seed: int = 0):
    """Originals, masked inputs and reconstructions (each ``[N, S, S, 3]`` in [0, 1]) of uint8 ``pixels``.

    The reconstruction keeps the visible patches and shows the decoder's prediction in the masked ones; with
    the normalised-pixel loss the prediction is put back on each patch's own mean and spread.
    """
    device = next(mae.parameters()).device
    x = normalize(torch.as_tensor(pixels, device=device), prep)
    noise = torch.rand(len(x), patch_count(mae.config, x.shape[-1]), generator=torch.Generator().manual_seed(seed))
    outputs = mae(pixel_values=x, noise=noise.to(device))
    predicted = outputs.logits
    if mae.config.norm_pix_loss:
        target = mae.patchify(x)
        predicted = predicted * (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5 + target.mean(dim=-1, keepdim=True)
    patch_values = predicted.shape[-1]
    hidden = mae.unpatchify(outputs.mask.unsqueeze(-1).expand(-1, -1, patch_values))  # 1 where masked
    predicted = mae.unpatchify(predicted)
    mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)

    def as_images(normalised: torch.Tensor) -> np.ndarray:
        return (normalised * std + mean).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()

    masked = x * (1 - hidden)  # a masked patch at the normalisation's mean: grey
    return as_images(x), as_images(masked), as_images(masked + predicted * hidden)


def write_reconstructions(mae: torch.nn.Module, split, prep: Preprocessing, out: Path, seed: int) -> Path:
    """``plots/reconstructions.png``: the first held-back images, their masked inputs and reconstructions."""
    from vitune.evaluation.plots import plot_reconstructions

    pixels = next(pixel_batches(split.select(range(min(GRID_IMAGES, len(split)))), GRID_IMAGES))
    return plot_reconstructions(*reconstructions(mae, pixels, prep, seed), out)
