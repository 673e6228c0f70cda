"""`vitune train`: fine-tune a classifier on a DATASET_DIR with ``transformers.Trainer``.

The run directory (RUN_DIR, :class:`vitune.storage.layout.RunDir`) ends up with ``model/``
(``save_pretrained`` + the image processor at the training resolution), ``metrics.json``
(validation, best epoch), ``plots/``, ``config.yaml`` and ``checkpoints/`` (for ``--resume``).
:func:`build_trainer` is the wiring on its own: the ``transformers.Trainer``, ready for ``.train()``.

Image size: the DATASET_DIR must be cached at the model's own resolution. A run-time
``interpolate_pos_encoding`` would train, but the saved model would then fail in
``pipeline("image-classification")``, which never passes that flag, so a mismatch is refused
with the ``--image-size`` to prepare the data at.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vitune.config import TrainConfig, TrainerConfig
from vitune.data.dataset_dir import DatasetInfo, require_image_size, require_split, uint8_rows
from vitune.data.folds import fold_record, load_run_dataset
from vitune.errors import UserError
from vitune.models.aliases import load_classifier, load_image_processor, load_model_config, resolve_preprocessing
from vitune.models.families import Family, family_of
from vitune.models.ood import fit_run_ood
from vitune.models.run import load_run
from vitune.runtime.hardware import describe_hardware
from vitune.runtime.progress import interactive
from vitune.storage.atomic import disk_full, remove_orphans, remove_stale_temp_files, replace_dir, write_atomic
from vitune.storage.layout import RunDir
from vitune.storage.lock import OutputLock
from vitune.tasks import Task, get_task
from vitune.tasks.calibration import fitted_calibration
from vitune.tasks.losses import MultiLabelLoss
from vitune.tasks.metrics import MetricsResult
from vitune.training.augment import device_inputs_for
from vitune.training.distributed import deepspeed_settings, engine_arguments, whole_models
from vitune.training.ema import add_ema
from vitune.training.layer_decay import add_branch_drop_path, drop_path_overrides, require_layer_decay
from vitune.training.lora import add_lora, is_lora, parameter_counts, save_lora
from vitune.training.model_card import check_can_push, model_card, push_to_hub
from vitune.training.tracking import report_to, setup_tracking
from vitune.training.trainer import (
    EPOCH_RECORD,
    STAGING,
    BaseTrainer,
    EpochHistoryCallback,
    EpochLinePrinter,
    EpochLineProgressCallback,
    NonFiniteLossCallback,
    StopRequestCallback,
    Uint8Collator,
    VituneTrainer,
)

log = logging.getLogger(__name__)

LOG_POINTS = 50  # about this many train-loss / lr points per run, for the plots


@dataclass
class TrainResult:
    """What a finished run produced: its directory and the contents of ``metrics.json``."""

    run_dir: Path
    metrics: dict


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` on a CUDA device that supports it, else ``fp32``; checks explicit choices."""
    cuda = torch.cuda.is_available()
    if precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not cuda:
        raise UserError("--precision fp16 needs a CUDA GPU: use --precision fp32 (or auto) on CPU")
    return precision


def split_labels(split) -> np.ndarray:
    """The ``labels`` column of a DATASET_DIR split (or a view of one) as a numpy array."""
    return np.asarray(split.with_format("numpy", columns=["labels"])["labels"])


def auto_pos_weight(train_split) -> torch.Tensor:
    """Per-label negatives/positives on the training split's known cells (1 for a label without positives)."""
    y = split_labels(train_split).astype(np.float64)
    positives, negatives = (y == 1).sum(axis=0), (y == 0).sum(axis=0)
    weights = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


def run_processor(model: str, image_size: int, trust_remote_code: bool = False):
    """The checkpoint's image processor set to resize straight to the training resolution (no crop).

    DATASET_DIR images are resized once to a square, so ``pipeline()`` must do the same to see
    what training saw.
    """
    processor = copy.deepcopy(load_image_processor(model, trust_remote_code))
    processor.size = {"height": image_size, "width": image_size}
    processor.do_resize = True
    if getattr(processor, "do_center_crop", False):
        processor.do_center_crop = False
    return processor


def loader_workers(config: TrainerConfig) -> int:
    """``--num-workers``, else 0 on the CPU (the model needs every core) and half the cores on a GPU."""
    if config.num_workers is not None:
        return config.num_workers
    # on CPU the model needs every core; on a GPU, loader workers keep it fed
    return min(8, (os.cpu_count() or 2) // 2) if torch.cuda.is_available() else 0


def trainer_arguments(config: TrainerConfig, family: Family, **settings):
    """``TrainingArguments`` for any vitune run: ``config``'s settings, epoch checkpoints, and ``settings`` on top.

    The settings passed as they are come from :meth:`TrainerConfig.training_argument_values` (the one mapping,
    which ``vitune tune`` also uses); the engine's (DeepSpeed, FSDP wrapping ``family``'s encoder layers) from
    :func:`vitune.training.distributed.engine_arguments`; the rest are derived here.
    """
    from transformers import TrainingArguments

    precision = resolve_precision(config.precision)
    values = dict(
        **config.training_argument_values(),
        **engine_arguments(config, family),
        output_dir=str(RunDir(config.out).checkpoints),
        max_steps=config.max_steps or -1,
        per_device_eval_batch_size=config.eval_batch_size or config.batch_size * 2,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_steps=config.logging_steps or 1.0 / LOG_POINTS,
        logging_nan_inf_filter=False,  # a NaN must surface (and stop the run), not be averaged away
        dataloader_num_workers=loader_workers(config),
        remove_unused_columns=False,
        report_to=report_to(config) or "none",
        run_name=Path(config.out).name,
        disable_tqdm=not interactive(),
        use_cpu=not torch.cuda.is_available(),  # also what makes torchrun on CPU real DDP (gloo)
    )
    return TrainingArguments(**{**values, **settings})


def training_arguments(config: TrainConfig, task: Task, model_config):
    """``TrainingArguments`` of a fine-tuning run of ``model_config``: the best epoch by the task's main metric is kept."""
    return trainer_arguments(
        config,
        family_of(model_config).classifier_family,
        load_best_model_at_end=True,
        metric_for_best_model=task.main_metric,
        greater_is_better=task.greater_is_better,
        label_names=["labels"],
    )


def _trainer_metrics(task: Task, labels: list[str], model_config, label_range):
    """The ``compute_metrics`` callback: aggregate metrics per evaluation (None -> NaN for Trainer)."""

    def metrics(eval_pred) -> dict[str, float]:
        y_true = task.targets_from_batches(eval_pred.label_ids, label_range)
        scores = task.scores(eval_pred.predictions, model_config)
        result = task.metrics(y_true, scores, labels)
        return {k: (math.nan if v is None else v) for k, v in result.metrics.items()}

    return metrics


def checkpoint_to_resume(config: TrainerConfig) -> str | None:
    """The checkpoint ``--resume`` continues from (None for a new run); a RUN_DIR that does not fit is a UserError."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = RunDir(config.out).checkpoints
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if config.resume and last is None:
        raise UserError(f"--resume: {folder} holds no checkpoint; drop --resume to start the run")
    if not config.resume and last is not None:
        raise UserError(
            f"{config.out} already holds a run ({last}): add --resume to continue it or choose a new --out"
        )
    return last if config.resume else None


def show_progress(trainer: BaseTrainer) -> None:
    """Bars and one line per evaluation on a terminal, only the lines in a log; a notebook keeps the Trainer's table."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(EpochLineProgressCallback)
    elif trainer.pop_callback(PrinterCallback) is not None:  # disable_tqdm: it would print every log dict
        trainer.add_callback(EpochLinePrinter)


def build_trainer(config: TrainConfig) -> VituneTrainer:
    """The :class:`transformers.Trainer` of ``config``, ready for ``.train()``.

    Model with a new head for the dataset's task and labels, a uint8 collator (batches are converted,
    augmented and normalised on the model's device, :mod:`vitune.training.augment`), the recipe's settings
    (layer decay, drop path, EMA, mixing), ``TrainingArguments``, metrics and vitune's callbacks
    (epoch history, divergence stop, progress lines). Raises :class:`UserError` for data that does not fit.
    """
    from transformers import set_seed

    ds, info = load_run_dataset(config.data, config.to_dict())  # a fold's run (--fold): its fold's train and validation
    task = get_task(info.task)
    prep = resolve_preprocessing(config.model, config.trust_remote_code)
    require_image_size(info, config.data, prep.image_size, config.model)
    train_split = require_split(ds, "train", config.data)
    val_split = require_split(ds, "validation", config.data)
    label_range = task.label_range(split_labels(train_split))
    if config.pos_weight == "auto" and not task.takes_pos_weight:
        raise UserError(f"--pos-weight auto balances rare labels of a multi_label dataset, not {task.name}: "
                        "use --pos-weight off")
    pos_weight = auto_pos_weight(train_split) if config.pos_weight == "auto" else None

    set_seed(config.seed)  # the new head is initialised here, before Trainer seeds
    model = build_model(config, task, info, label_range)
    trainer = VituneTrainer(
        model=model,
        args=training_arguments(config, task, model.config),
        train_dataset=uint8_rows(train_split),
        eval_dataset=uint8_rows(val_split),
        data_collator=Uint8Collator(task, label_range),
        processing_class=run_processor(config.model, info.image_size, config.trust_remote_code),
        compute_metrics=_trainer_metrics(task, info.labels, model.config, label_range),
        info=info,
        regression_loss=config.regression_loss,
        multi_label_loss=multi_label_loss(config, task),
        pos_weight=pos_weight,
        device_inputs=device_inputs_for(config, prep, task, len(task.output_names(info.labels))),
        layer_decay=config.layer_decay,
    )
    if config.ema is not None:
        add_ema(trainer, config.ema)
    add_run_callbacks(trainer, config)
    return trainer


def add_run_callbacks(trainer: BaseTrainer, config: TrainerConfig) -> None:
    """What every vitune run reports: progress lines, the epoch history, the divergence and Ctrl-C stops, tracking."""
    show_progress(trainer)
    trainer.add_callback(EpochHistoryCallback(trainer.loss_tracker))
    trainer.add_callback(NonFiniteLossCallback)
    trainer.add_callback(StopRequestCallback)
    setup_tracking(trainer, config)


def multi_label_loss(config: TrainConfig, task: Task) -> MultiLabelLoss:
    """``--loss`` and its parameters; focal and asl are for multi-label runs only."""
    if config.loss != "bce" and not task.multi_output:
        raise UserError(f"--loss {config.loss} is for multi-label data; this dataset is {task.name}: drop --loss")
    for name in ("focal_gamma", "asl_gamma_neg", "asl_gamma_pos", "asl_clip"):
        if getattr(config, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} {getattr(config, name)} must not be negative")
    return MultiLabelLoss(config.loss, config.focal_gamma, config.asl_gamma_neg, config.asl_gamma_pos, config.asl_clip)


def build_model(config: TrainConfig, task: Task, info: DatasetInfo, label_range) -> torch.nn.Module:
    """The classifier to train: ``config.model`` with a new head for ``info``'s labels, the run's drop
    path and (regression) target scaling in its config, LoRA-wrapped with ``--lora``."""
    model_config = load_model_config(config.model, config.trust_remote_code)
    if config.layer_decay is not None:
        require_layer_decay(model_config)
    overrides = drop_path_overrides(model_config, config.drop_path)
    model = load_classifier(config.model, task, info.labels, config.trust_remote_code, overrides, config.pooling)
    add_branch_drop_path(model, config.drop_path)
    if label_range is not None:
        model.config.vitune_label_range = list(label_range)
        model.config.vitune_regression_loss = config.regression_loss
    return add_lora(model, config) if config.lora else model


def epoch_history(log_history: list[dict]) -> list[dict]:
    """``[{"epoch", "train_loss", "lr", "eval_...": ...}]`` from the Trainer's log history."""
    evals = {e["step"]: e for e in log_history if "eval_loss" in e}
    history = []
    for record in (e for e in log_history if e.get(EPOCH_RECORD)):
        entry = {"epoch": record["epoch"], "train_loss": record["train_loss"], "lr": record["lr"]}
        for key, value in evals.get(record["step"], {}).items():
            if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second")):
                entry[key] = None if isinstance(value, float) and math.isnan(value) else value
        history.append(entry)
    return history


def throughput(log_history: list[dict]) -> tuple[float, float]:
    """Training seconds (evaluation left out) and images per second, from the epoch records."""
    records = [e for e in log_history if e.get(EPOCH_RECORD)]
    seconds = sum(e["train_seconds"] for e in records)
    samples = sum(e["train_samples"] for e in records)
    return seconds, (samples / seconds if seconds > 0 else 0.0)


def validation_logits(trainer: VituneTrainer) -> tuple[np.ndarray, np.ndarray]:
    """Targets (in target units) and logits of the trainer's model on the validation split."""
    output = trainer.predict(trainer.eval_dataset)
    return split_labels(trainer.eval_dataset.split), np.asarray(output.predictions)


def save_calibration(run: RunDir, trainer: VituneTrainer, y_true: np.ndarray, logits: np.ndarray) -> None:
    """Fit the temperature on validation (classification) and write ``calibration.json``."""
    fitted = fitted_calibration(trainer.task, logits, y_true, trainer.info.labels, trainer.model.config)
    if fitted is None:
        run.calibration.unlink(missing_ok=True)
        return
    temperature = fitted.pop("temperature")
    run.save_temperature(temperature, fitted)
    log.info("temperature fitted on validation: ECE %.4f -> %.4f", fitted["ece_macro_before"] or math.nan,
             fitted["ece_macro_after"] or math.nan)


def save_ood_statistics(run: RunDir, config: TrainConfig, args) -> None:
    """Write ``ood.safetensors``: the saved model's classifier input on train and validation (see :mod:`vitune.models.ood`).

    The pass runs on the saved model in float32, as ``vitune predict`` will, rather than reusing the
    training loop's evaluation (mixed precision, sharded under DeepSpeed or FSDP), so the threshold is
    set on the very numbers a prediction is compared with.
    """
    with whole_models(args):  # this process alone loads the saved model (lazily, inside the pass)
        statistics = fit_run_ood(load_run(run.root, args.device), config.data,
                                 config.eval_batch_size or config.batch_size * 2)
    if statistics is None:
        run.ood.unlink(missing_ok=True)
        return
    statistics.save(run.ood)


def write_plots(run: RunDir, info: DatasetInfo, y_true, scores, log_history: list[dict]) -> None:
    """``plots/loss.png``, ``plots/lr.png`` and, for classification, ``roc.png`` / ``confusion.png``."""
    from vitune.evaluation.plots import plot_task

    write_curves(run, log_history)
    plot_task(get_task(info.task), y_true, scores, info.labels, run.plots, "validation", kinds=("roc", "confusion"))


def write_curves(run: RunDir, log_history: list[dict]) -> None:
    """``plots/loss.png`` (training and validation loss) and ``plots/lr.png`` from the Trainer's log history."""
    from vitune.evaluation.plots import plot_loss, plot_lr

    train_logs = [e for e in log_history if "loss" in e and "learning_rate" in e]
    eval_logs = [e for e in log_history if "eval_loss" in e]
    plot_loss(
        [e["step"] for e in train_logs],
        [e["loss"] for e in train_logs],
        run.plots / "loss.png",
        [e["step"] for e in eval_logs],
        [e["eval_loss"] for e in eval_logs],
    )
    plot_lr([e["step"] for e in train_logs], [e["learning_rate"] for e in train_logs], run.plots / "lr.png")


def metrics_document(info: DatasetInfo, result: MetricsResult, y_true, log_history: list[dict],
                     parameters: dict[str, int]) -> dict:
    """The ``metrics.json`` content, spec keys (``parameters``: total and trainable counts) and ``hardware``."""
    train_seconds, samples_per_second = throughput(log_history)
    return {
        "task": info.task,
        "split": "validation",
        "num_samples": int(len(y_true)),
        "metrics": result.metrics,
        "per_label": result.per_label,
        "history": epoch_history(log_history),
        "train_seconds": round(train_seconds, 3),
        "samples_per_second": round(samples_per_second, 3),
        "parameters": parameters,
        "hardware": describe_hardware(),
    }


def main_process() -> bool:
    """Rank 0 (or no launcher): the process that writes RUN_DIR's files and holds its lock."""
    return os.environ.get("RANK", "0") == "0"


MODEL_STAGING = ".model.staging"  # inside RUN_DIR: model/ being written
ADAPTER_STAGING = ".adapter.staging"  # inside RUN_DIR: adapter/ being written (--lora)
MAE_STAGING = ".mae.staging"  # inside RUN_DIR: mae/ being written (`vitune pretrain`)


def _save_final_model(trainer: VituneTrainer, run: RunDir, card: str) -> None:
    """``model/`` (with its card ``card``) and, for LoRA, ``adapter/`` written whole beside the run, then
    renamed into place (never half-written)."""
    staging, adapter_staging = run.root / MODEL_STAGING, run.root / ADAPTER_STAGING
    try:
        if is_lora(trainer.model):
            if trainer.is_world_process_zero():
                save_lora(trainer.accelerator.unwrap_model(trainer.model), adapter_staging, staging,
                          trainer.processing_class)
        else:
            trainer.save_model(str(staging))  # every process: gathers DeepSpeed shards, rank 0 writes
    except BaseException:
        for folder in (staging, adapter_staging):  # a failed save (a full disk) leaves nothing half-written
            shutil.rmtree(folder, ignore_errors=True)
        raise
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle, not needed to load
        (staging / run.card.name).write_text(card)
        if adapter_staging.is_dir():
            replace_dir(adapter_staging, run.adapter)
        replace_dir(staging, run.model)


def train(config: TrainConfig) -> TrainResult:
    """Fine-tune ``config.model`` on ``config.data`` and fill ``config.out`` (RUN_DIR).

    Evaluates on the validation split each epoch, keeps the best checkpoint by the task's main
    metric, and reports that model's validation metrics. ``config.resume`` continues from the last
    checkpoint in ``RUN_DIR/checkpoints`` with the same final result as an uninterrupted run. One
    process at a time trains into a RUN_DIR; checkpoints and ``model/`` are renamed into place whole.
    """
    if config.folds is not None and config.fold is None:
        raise UserError(f"--folds {config.folds} trains {config.folds} runs: call "
                        "vitune.cross_validate(config), as `vitune train --folds K` does")
    if config.push_to_hub and main_process():
        check_can_push(config.push_to_hub)  # offline or without a token: said now, not after the training
    with writing_run(config) as run:
        return _train(config, run)


@contextlib.contextmanager
def writing_run(config: TrainerConfig) -> Iterator[RunDir]:
    """The RUN_DIR of ``config``, held by this run alone, with what a killed run was writing cleared.

    A precision this machine lacks or a missing DeepSpeed file fails before any work; a full disk
    ends in one line saying what was kept. Only the main process (rank 0) holds the lock and clears.
    """
    resolve_precision(config.precision)
    if config.deepspeed is not None:
        deepspeed_settings(config)  # a DeepSpeed config that cannot be read fails before any work too
    run = RunDir(config.out)
    lock = OutputLock(run.root) if main_process() else contextlib.nullcontext()
    kept = "the checkpoints saved before are whole (continue with --resume)"
    with lock, disk_full(f"training into {run.root}", kept):
        if main_process():  # what a killed run was writing
            shutil.rmtree(run.checkpoints / STAGING, ignore_errors=True)
            for staging in (MODEL_STAGING, ADAPTER_STAGING, MAE_STAGING):
                shutil.rmtree(run.root / staging, ignore_errors=True)
            for folder in (run.model, run.mae):
                remove_orphans(folder)  # a swap cut short: put back, then cleared
            remove_stale_temp_files(run.root)
        yield run


def _train(config: TrainConfig, run: RunDir) -> TrainResult:
    resume_from = checkpoint_to_resume(config)
    trainer = build_trainer(config)
    info = trainer.info
    if trainer.is_world_process_zero():
        run.root.mkdir(parents=True, exist_ok=True)
        config.save(run.config)
    log.info("training %s on %s (%s, %d train / %d validation images) -> %s", config.model, config.data, info.task,
             len(trainer.train_dataset), len(trainer.eval_dataset), run.root)
    trainer.train(resume_from_checkpoint=resume_from)
    y_true, logits = validation_logits(trainer)
    scores = trainer.task.scores(logits, trainer.model.config)
    result = trainer.task.metrics(y_true, scores, info.labels)
    document = metrics_document(info, result, y_true, trainer.state.log_history, parameter_counts(trainer.model))
    if config.fold is not None:  # which images were this fold's validation, checked wherever the fold is read
        document["fold"] = fold_record(config.to_dict(), trainer.eval_dataset.split)
    _save_final_model(trainer, run, model_card(config, info, document, trainer.model.config))
    if trainer.is_world_process_zero():
        write_atomic(run.metrics, json.dumps(document, indent=2) + "\n")
        write_plots(run, info, y_true, scores, trainer.state.log_history)
        save_calibration(run, trainer, y_true, logits)
        save_ood_statistics(run, config, trainer.args)
        if config.push_to_hub:
            push_to_hub(run.model, config.push_to_hub)
    log.info("validation %s: %s", info.task, json.dumps(result.metrics))
    return TrainResult(run.root, document)
