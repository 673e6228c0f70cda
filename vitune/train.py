"""`vitune train`: fine-tune a classifier on a DATASET_DIR with ``transformers.Trainer``.

The run directory (RUN_DIR) ends up with ``model/`` (``save_pretrained`` + the image processor at
the training resolution), ``metrics.json`` (validation, best epoch), ``plots/``, ``config.yaml``,
``checkpoints/`` (for ``--resume``) and ``predictions/validation.npz`` (targets and scores, for
threshold tuning by ``vitune evaluate``).

Image size: the DATASET_DIR must be cached at the model's own resolution. A run-time
``interpolate_pos_encoding`` would train, but the saved model would then fail in
``pipeline("image-classification")``, which never passes that flag, so a mismatch is refused
with the ``--image-size`` to prepare the data at.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vitune.config import TrainConfig
from vitune.data.dataset_dir import DatasetInfo, load_dataset_dir, require_image_size, require_split, uint8_rows
from vitune.errors import UserError
from vitune.inference import logits_to_scores, unscale_target
from vitune.metrics import GREATER_IS_BETTER, MAIN_METRIC, MetricsResult, compute_metrics
from vitune.models import Preprocessing, load_classifier, load_image_processor, resolve_preprocessing
from vitune.trainer import (
    EPOCH_RECORD,
    EpochHistoryCallback,
    EpochLineProgressCallback,
    NonFiniteLossCallback,
    PixelCollator,
    VituneTrainer,
)

log = logging.getLogger(__name__)

LOG_POINTS = 50  # about this many train-loss / lr points per run, for the plots


@dataclass
class RunResult:
    """What a finished run produced: its directory and the contents of ``metrics.json``."""

    run_dir: Path
    metrics: dict
    best_checkpoint: str | None

    @property
    def model_dir(self) -> Path:
        """``RUN_DIR/model``: loadable by ``from_pretrained`` and ``pipeline``."""
        return self.run_dir / "model"


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` on a CUDA device that supports it, else ``fp32``; checks explicit choices."""
    cuda = torch.cuda.is_available()
    if precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not cuda:
        raise UserError("--precision fp16 needs a CUDA GPU: use --precision fp32 (or auto) on CPU")
    return precision


def train_label_range(train_split) -> tuple[float, float]:
    """Min and max of the training regression target (the [0, 1] scaling the model learns)."""
    values = np.asarray(train_split.with_format("numpy", columns=["labels"])["labels"], dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        raise UserError(f"the training target is constant ({lo}): regression needs at least two distinct values")
    return lo, hi


def auto_pos_weight(train_split) -> torch.Tensor:
    """Per-label negatives/positives on the training split (1 for a label without positives)."""
    y = np.asarray(train_split.with_format("numpy", columns=["labels"])["labels"], dtype=np.float64)
    positives = y.sum(axis=0)
    weights = np.where(positives > 0, (len(y) - positives) / np.maximum(positives, 1), 1.0)
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


def _num_workers(config: TrainConfig) -> int:
    if config.num_workers is not None:
        return config.num_workers
    # on CPU the model needs every core; on a GPU, loader workers keep it fed
    return min(8, (os.cpu_count() or 2) // 2) if torch.cuda.is_available() else 0


def training_arguments(config: TrainConfig, task: str):
    """``TrainingArguments`` for ``config`` (epoch evaluation/checkpoints, best model kept)."""
    from transformers import TrainingArguments

    precision = resolve_precision(config.precision)
    return TrainingArguments(
        output_dir=str(Path(config.out) / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size or config.batch_size * 2,
        gradient_accumulation_steps=config.grad_accum,
        warmup_steps=config.warmup,
        lr_scheduler_type=config.scheduler,
        weight_decay=config.weight_decay,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=config.seed,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=MAIN_METRIC[task],
        greater_is_better=GREATER_IS_BETTER[task],
        logging_steps=config.logging_steps or 1.0 / LOG_POINTS,
        logging_nan_inf_filter=False,  # a NaN must surface (and stop the run), not be averaged away
        dataloader_num_workers=_num_workers(config),
        remove_unused_columns=False,
        label_names=["labels"],
        report_to="none",
        deepspeed=config.deepspeed,
        use_cpu=not torch.cuda.is_available(),  # also what makes torchrun on CPU real DDP (gloo)
    )


def _trainer_metrics(task: str, labels: list[str], model_config, label_range):
    """The ``compute_metrics`` callback: aggregate metrics per evaluation (None -> NaN for Trainer)."""

    def metrics(eval_pred) -> dict[str, float]:
        y_true = eval_pred.label_ids
        if task == "regression":
            y_true = unscale_target(y_true, label_range)
        scores = logits_to_scores(task, eval_pred.predictions, model_config)
        result = compute_metrics(task, y_true, scores, labels)
        return {k: (math.nan if v is None else v) for k, v in result.metrics.items()}

    return metrics


def _checkpoint_to_resume(config: TrainConfig) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(config.out) / "checkpoints"
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if config.resume and last is None:
        raise UserError(f"--resume: {folder} holds no checkpoint; drop --resume to start the run")
    if not config.resume and last is not None:
        raise UserError(
            f"{config.out} already holds a run ({last}): add --resume to continue it or choose a new --out"
        )
    return last if config.resume else None


def build_trainer(config: TrainConfig, ds, info: DatasetInfo) -> tuple[VituneTrainer, Preprocessing]:
    """Model, collators, arguments and callbacks wired into a :class:`VituneTrainer`."""
    from transformers import set_seed
    from transformers.trainer_callback import ProgressCallback

    prep = resolve_preprocessing(config.model, config.trust_remote_code)
    require_image_size(info, config.data, prep.image_size, config.model)
    train_split = require_split(ds, "train", config.data)
    val_split = require_split(ds, "validation", config.data)
    label_range = train_label_range(train_split) if info.task == "regression" else None
    if config.pos_weight == "auto" and info.task != "multi_label":
        raise UserError("--pos-weight auto balances rare labels of a multi_label dataset: use --pos-weight off")
    pos_weight = auto_pos_weight(train_split) if config.pos_weight == "auto" else None

    set_seed(config.seed)  # the new head is initialised here, before Trainer seeds
    model = load_classifier(config.model, info.task, info.labels, config.trust_remote_code)
    if label_range is not None:
        model.config.vitune_label_range = list(label_range)
        model.config.vitune_regression_loss = config.regression_loss

    args = training_arguments(config, info.task)
    trainer = VituneTrainer(
        model=model,
        args=args,
        train_dataset=uint8_rows(train_split),
        eval_dataset=uint8_rows(val_split),
        data_collator=PixelCollator(prep, info.task, label_range),
        train_collator=PixelCollator(prep, info.task, label_range, config.augment, config.augment_hflip),
        processing_class=run_processor(config.model, info.image_size, config.trust_remote_code),
        compute_metrics=_trainer_metrics(info.task, info.labels, model.config, label_range),
        task=info.task,
        regression_loss=config.regression_loss,
        pos_weight=pos_weight,
    )
    if trainer.pop_callback(ProgressCallback) is not None:  # absent when the user disabled tqdm
        trainer.add_callback(EpochLineProgressCallback)
    trainer.add_callback(EpochHistoryCallback(trainer.loss_tracker, config.lr))
    trainer.add_callback(NonFiniteLossCallback(config.lr))
    return trainer, prep


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


def _throughput(log_history: list[dict]) -> tuple[float, float]:
    records = [e for e in log_history if e.get(EPOCH_RECORD)]
    seconds = sum(e["train_seconds"] for e in records)
    samples = sum(e["train_samples"] for e in records)
    return seconds, (samples / seconds if seconds > 0 else 0.0)


def validation_scores(trainer: VituneTrainer, ds, info: DatasetInfo) -> tuple[np.ndarray, np.ndarray]:
    """Targets (in target units) and scores of the best model on the validation split."""
    val_split = ds["validation"]
    output = trainer.predict(trainer.eval_dataset)
    scores = logits_to_scores(info.task, output.predictions, trainer.model.config)
    y_true = np.asarray(val_split.with_format("numpy", columns=["labels"])["labels"])
    return y_true, scores


def write_plots(run_dir: Path, task: str, labels: list[str], y_true, scores, log_history: list[dict]) -> None:
    """``plots/loss.png``, ``plots/lr.png`` and, for classification, ``roc.png`` / ``confusion.png``."""
    from vitune.plots import plot_confusion, plot_loss, plot_lr, plot_roc

    plots = run_dir / "plots"
    train_logs = [e for e in log_history if "loss" in e and "learning_rate" in e]
    eval_logs = [e for e in log_history if "eval_loss" in e]
    plot_loss(
        [e["step"] for e in train_logs],
        [e["loss"] for e in train_logs],
        plots / "loss.png",
        [e["step"] for e in eval_logs],
        [e["eval_loss"] for e in eval_logs],
    )
    plot_lr([e["step"] for e in train_logs], [e["learning_rate"] for e in train_logs], plots / "lr.png")
    if task == "multi_label":
        plot_roc(y_true, scores, labels, plots / "roc.png", title="Validation ROC")
    elif task == "single_label":
        one_hot = np.eye(len(labels))[np.asarray(y_true, dtype=int)]
        plot_roc(one_hot, scores, labels, plots / "roc.png", title="Validation ROC (one-vs-rest)")
        plot_confusion(y_true, scores.argmax(axis=1), labels, plots / "confusion.png", title="Validation")


def metrics_document(info: DatasetInfo, result: MetricsResult, y_true, log_history: list[dict]) -> dict:
    """The ``metrics.json`` content, spec keys only."""
    train_seconds, samples_per_second = _throughput(log_history)
    return {
        "task": info.task,
        "split": "validation",
        "num_samples": int(len(y_true)),
        "metrics": result.metrics,
        "per_label": result.per_label,
        "history": epoch_history(log_history),
        "train_seconds": round(train_seconds, 3),
        "samples_per_second": round(samples_per_second, 3),
    }


def save_run(trainer: VituneTrainer, run_dir: Path, info: DatasetInfo, y_true, scores, document: dict) -> None:
    """Metrics, predictions and plots into RUN_DIR (main process only; the model is saved before)."""
    (run_dir / "model" / "training_args.bin").unlink(missing_ok=True)  # a pickle, not needed to load
    (run_dir / "metrics.json").write_text(json.dumps(document, indent=2) + "\n")
    predictions = run_dir / "predictions"
    predictions.mkdir(exist_ok=True)
    np.savez(
        predictions / "validation.npz",
        y_true=np.asarray(y_true),
        scores=np.asarray(scores),
        labels=np.asarray(info.labels),
    )
    write_plots(run_dir, info.task, info.labels, y_true, scores, trainer.state.log_history)


def train(config: TrainConfig) -> RunResult:
    """Fine-tune ``config.model`` on ``config.data`` and fill ``config.out`` (RUN_DIR).

    Evaluates on the validation split each epoch, keeps the best checkpoint by the task's main
    metric, and reports that model's validation metrics. ``config.resume`` continues from the last
    checkpoint in ``RUN_DIR/checkpoints`` with the same final result as an uninterrupted run.
    """
    resolve_precision(config.precision)  # a precision this machine lacks fails before any work
    ds, info = load_dataset_dir(config.data)
    run_dir = Path(config.out)
    resume_from = _checkpoint_to_resume(config)
    trainer, _ = build_trainer(config, ds, info)
    if trainer.is_world_process_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / "config.yaml")
    log.info(
        "training %s on %s (%s, %d train / %d validation images) -> %s",
        config.model, config.data, info.task, len(ds["train"]), len(ds["validation"]), run_dir,
    )
    trainer.train(resume_from_checkpoint=resume_from)
    y_true, scores = validation_scores(trainer, ds, info)
    result = compute_metrics(info.task, y_true, scores, info.labels)
    document = metrics_document(info, result, y_true, trainer.state.log_history)
    trainer.save_model(str(run_dir / "model"))  # every process: gathers DeepSpeed shards, rank 0 writes
    if trainer.is_world_process_zero():
        save_run(trainer, run_dir, info, y_true, scores, document)
    log.info("validation %s: %s", info.task, json.dumps(result.metrics))
    return RunResult(run_dir, document, trainer.state.best_model_checkpoint)
