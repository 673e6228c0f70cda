"""The pieces vitune adds to ``transformers.Trainer``: collator, task loss, epoch history, NaN guard.

* :class:`Uint8Collator` stacks uint8 DATASET_DIR rows (pinned by the Trainer's loader on a GPU) and
  task-shaped labels; :class:`vitune.training.augment.DeviceInputs` turns them into the model's input on its device.
* :class:`BaseTrainer` is what every vitune Trainer shares (`vitune train`'s and `vitune pretrain`'s): batches
  prepared on the device, the running loss, checkpoints written whole and reloaded by name, weight decay
  sparing the tokens and position embeddings the family table names, layer decay and the EMA.
* :class:`VituneTrainer` computes the task's loss itself (:meth:`vitune.tasks.base.Task.loss`:
  multi-label BCE with optional ``pos_weight``, single-label CE, regression MSE or BCE on the
  [0, 1]-scaled target) and keeps
  a running loss on the device so divergence is caught without a host sync on every step.
* :class:`EpochHistoryCallback` records the mean training loss and learning rate of each epoch
  into ``TrainerState.log_history`` (so it survives ``--resume``) and stops a diverged run with a
  :class:`UserError` before anything is evaluated or saved.
* :class:`EpochLineProgressCallback` (on a terminal) and :class:`EpochLinePrinter` (in a log)
  print one line per evaluation.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from vitune.data.dataset_dir import DatasetInfo
from vitune.errors import UserError
from vitune.models.families import family_of
from vitune.runtime.signals import raise_if_stopped
from vitune.storage.atomic import replace_dir
from vitune.tasks import Task, get_task
from vitune.training.augment import DeviceInputs
from vitune.training.distributed import shard_on_cpu_processes
from vitune.training.ema import WeightEma, save_raw_weights
from vitune.training.layer_decay import layer_decay_groups
from vitune.training.lora import is_lora

EPOCH_RECORD = "vitune_epoch"  # marks the per-epoch entries this module adds to log_history
STAGING = ".staging"  # inside checkpoints/: a checkpoint being written (never matched by get_last_checkpoint)


@dataclass
class Uint8Collator:
    """Stack uint8 ``[C, S, S]`` rows (C = 1 or 3) as they are, and shape the labels.

    No per-pixel work on the CPU: :class:`vitune.training.augment.DeviceInputs` converts, augments and
    normalises on the model's device. Labels as the task's loss takes them
    (:meth:`vitune.tasks.base.Task.batch_labels`): multi_label float N-hot ``[B, K]``; single_label
    int64 ``[B]``; regression float ``[B]`` scaled to [0, 1] with ``label_range`` (the training
    split's min and max). Without a ``task`` (pre-training) the batch is the pixels alone.
    """

    task: Task | None
    label_range: tuple[float, float] | None = None

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        pixels = torch.from_numpy(np.stack([r["pixel_values"] for r in rows]))
        if self.task is None:
            return {"pixel_values": pixels}
        labels = self.task.batch_labels([r["labels"] for r in rows], self.label_range)
        return {"pixel_values": pixels, "labels": labels}


class LossTracker:
    """Running sum of training losses on the device: read (one sync) only at epoch end."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget what was added (a new run, or a new trial of a search, starts from nothing)."""
        self.total: torch.Tensor | None = None
        self.batches = 0
        self.samples = 0

    def add(self, loss: torch.Tensor, samples: int) -> None:
        """Accumulate one micro-batch loss without synchronising."""
        value = loss.detach().float()
        self.total = value if self.total is None else self.total + value
        self.batches += 1
        self.samples += samples

    def pop(self) -> tuple[float, int]:
        """Mean loss and sample count since the last call, over all processes (NaN if any loss was)."""
        if self.total is None:
            return math.nan, 0
        counts = self.total.new_tensor([self.batches, self.samples])
        sums = torch.cat([self.total.reshape(1), counts])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        self.reset()
        total, batches, samples = sums.tolist()
        return total / batches, int(samples)


class BaseTrainer(Trainer):
    """``Trainer`` with what every vitune run shares; a subclass computes its loss in ``compute_loss``.

    ``device_inputs`` (:class:`vitune.training.augment.DeviceInputs`) turns the uint8 batches into the
    model's input on its device (augmented while training); the loss of each training step goes to
    ``loss_tracker`` (the epoch history and the divergence check read it). Weight decay spares what the
    family table says (:meth:`vitune.models.families.Family.decays`) besides the Trainer's biases and norms.
    """

    # our loss is a per-batch mean: let Trainer divide it by the gradient-accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, *args, device_inputs: DeviceInputs, layer_decay: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_decay = layer_decay
        self.ema: WeightEma | None = None  # set by vitune.training.fine_tune for --ema
        self.device_inputs = device_inputs
        self.loss_tracker = LossTracker()
        self.model_accepts_loss_kwargs = False  # no per-step label counting: our loss is a plain mean

    def create_accelerator_and_postprocess(self) -> None:
        """The Trainer's accelerator, sharding with FSDP on CPU processes too (:func:`shard_on_cpu_processes`)."""
        super().create_accelerator_and_postprocess()
        if shard_on_cpu_processes(self.accelerator, self.args.fsdp_plugin_args):
            self.is_fsdp_enabled = True

    def get_decay_parameter_names(self, model) -> list[str]:
        """The Trainer's decayed parameters (no biases, no norms) less the tokens and positions the family spares."""
        family = family_of(model.config)
        return [name for name in super().get_decay_parameter_names(model) if family.decays(name)]

    def create_optimizer(self, model=None):
        """The Trainer's optimizer; with ``layer_decay``, one parameter group per (depth, weight decay) with its LR."""
        if self.layer_decay is None or self.optimizer is not None:
            return super().create_optimizer(model)
        target = self.model if model is None else model
        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, target)
        groups = layer_decay_groups(target, set(self.get_decay_parameter_names(target)), self.args.weight_decay,
                                    self.args.learning_rate, self.layer_decay)
        self.optimizer = optimizer_cls(groups, **kwargs)
        return self.optimizer

    def evaluate(self, *args, **kwargs):
        """The Trainer's evaluation, of the EMA weights when there is an EMA."""
        with self._ema_weights():
            return super().evaluate(*args, **kwargs)

    def _ema_weights(self):
        """Inside: the model holds the EMA weights (yields the raw ones); a no-op without ``--ema``."""
        if self.ema is None:
            return contextlib.nullcontext()
        return self.ema.swapped(self.accelerator.unwrap_model(self.model))

    # transformers 5 saves checkpoints with the Hub's (legacy) weight names but Trainer reloads them with a
    # raw, non-strict load_state_dict, so for ViT & co. nothing matches and --resume / the best model
    # silently keep the current weights (huggingface/transformers#43701, #48805). Reload through
    # from_pretrained, which applies the name conversion, and copy strictly. DeepSpeed/FSDP keep their own path.
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or is_lora(self.model):  # PEFT reloads its adapter
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._copy_weights_from(resume_from_checkpoint, model or self.model)
        if self.ema is not None:  # the checkpoint's weights are the EMA: the raw ones lie beside them
            self.ema.resume(self.accelerator.unwrap_model(model or self.model), resume_from_checkpoint)

    def _load_best_model(self):
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or is_lora(self.model):
            return super()._load_best_model()
        self._copy_weights_from(self.state.best_model_checkpoint, self.model)

    # A checkpoint is written whole into checkpoints/.staging/checkpoint-N, then renamed into place:
    # a crash mid-save never leaves a half-written checkpoint-N that --resume would pick up.
    # With --ema it holds the EMA weights (what was evaluated) and the raw ones beside them.
    def _save_checkpoint(self, model, trial) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

        run_dir = Path(self._get_output_dir(trial=trial))
        staging = run_dir / STAGING
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._get_output_dir = lambda trial=None: str(staging)  # where the parent's save writes, this once
        try:
            with self._ema_weights() as raw:
                super()._save_checkpoint(model, trial)
                if raw is not None and self.args.should_save:
                    save_raw_weights(raw, staging / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # a failed save (a full disk) leaves nothing half-written
            raise
        finally:
            del self._get_output_dir
        self.accelerator.wait_for_everyone()  # every rank has written its part (RNG state, shards)
        moved_best = (self.state.best_model_checkpoint or "").startswith(str(staging))
        if moved_best:  # on every rank: the path the best checkpoint is about to have
            self.state.best_model_checkpoint = str(run_dir / name)
        if self.args.should_save:
            if moved_best:
                self.state.save_to_json(str(staging / name / "trainer_state.json"))  # with that path
            replace_dir(staging / name, run_dir / name)
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()

    def _copy_weights_from(self, checkpoint_dir: str, model) -> None:
        target = self.accelerator.unwrap_model(model)
        saved = type(target).from_pretrained(checkpoint_dir)
        target.load_state_dict(saved.state_dict(), strict=True)



class VituneTrainer(BaseTrainer):
    """:class:`BaseTrainer` with vitune's task loss (`vitune train`).

    ``info`` is the DATASET_DIR's :class:`DatasetInfo` (task and label names of the run);
    ``device_inputs`` augments and mixes training batches only.
    """

    def __init__(self, *args, info: DatasetInfo, regression_loss: str, pos_weight, multi_label_loss=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.info = info
        self.task: Task = get_task(info.task)
        self.regression_loss = regression_loss
        self.multi_label_loss = multi_label_loss  # --loss (vitune.tasks.losses.MultiLabelLoss); None: masked BCE
        self.pos_weight = pos_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Task loss of the batch prepared on the device; training losses also feed the divergence check."""
        pixels, labels = self.device_inputs(inputs["pixel_values"], inputs["labels"], train=model.training)
        outputs = model(pixel_values=pixels)
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(outputs.logits.device)
        loss = self.task.loss(outputs.logits, labels, self.regression_loss, pos_weight, self.multi_label_loss)
        if model.training:
            self.loss_tracker.add(loss, len(labels))
        return (loss, outputs) if return_outputs else loss


class EpochHistoryCallback(TrainerCallback):
    """Per-epoch train loss / lr / train-only seconds into ``log_history``; stops on NaN or inf loss.

    ``on_epoch_end`` runs before the epoch's evaluation and checkpoint, so a diverged run raises
    before a single garbage weight is written.
    """

    def __init__(self, tracker: LossTracker) -> None:
        self.tracker = tracker
        self.epoch_started = 0.0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epoch_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save or control.should_training_stop:
            self._record(args, state, kwargs.get("lr_scheduler"))

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.tracker.batches:
            self._record(args, state, kwargs.get("lr_scheduler"))

    def _record(self, args, state, scheduler) -> None:
        loss, samples = self.tracker.pop()
        if not math.isfinite(loss):
            raise diverged(loss, state, args.learning_rate)
        state.log_history.append(
            {
                EPOCH_RECORD: True,
                "epoch": round(state.epoch, 4),
                "step": state.global_step,
                "train_loss": loss,
                "lr": scheduler.get_last_lr()[0] if scheduler is not None else args.learning_rate,
                "train_seconds": time.perf_counter() - self.epoch_started,
                "train_samples": samples,
            }
        )
        self.epoch_started = time.perf_counter()


def evaluation_line(args, state, logs: dict) -> str | None:
    """``epoch 2/10: validation loss 0.2409, roc_auc_macro 0.8260, ...`` for an evaluation log, else None."""
    if "eval_loss" not in logs:
        return None
    shown = {k.removeprefix("eval_"): v for k, v in logs.items()
             if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second"))}
    values = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
    return f"epoch {state.epoch:g}/{args.num_train_epochs:g}: validation {values}"


class EpochLineProgressCallback(ProgressCallback):
    """The Trainer's progress bars (on a terminal), with one short line per evaluation instead of every log dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        line = evaluation_line(args, state, logs or {})
        if state.is_world_process_zero and self.training_bar is not None and line:
            self.training_bar.write(line)


class EpochLinePrinter(TrainerCallback):
    """Off a terminal: no bars, one line per evaluation on stdout."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        line = evaluation_line(args, state, logs or {})
        if state.is_world_process_zero and line:
            print(line, flush=True)


class StopRequestCallback(TrainerCallback):
    """Ctrl-C honoured at the next step even when Python swallowed its first KeyboardInterrupt."""

    def on_step_end(self, args, state, control, **kwargs):
        raise_if_stopped()


class NonFiniteLossCallback(TrainerCallback):
    """Stop at the first logged training loss that is NaN or inf (an earlier signal than epoch end)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise diverged(loss, state, args.learning_rate)  # a search trial's own, not the base config's


def diverged(loss: float, state, learning_rate: float) -> UserError:
    """The error that ends a run whose loss is no longer finite."""
    return UserError(
        f"training diverged: the loss became {loss} by step {state.global_step} (epoch {state.epoch:.2f}); "
        f"nothing was saved for it. Lower --lr (now {learning_rate:g}) or use --precision fp32"
    )
