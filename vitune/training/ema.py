"""``--ema DECAY``: an exponential moving average of the weights, the model that is evaluated and saved.

:class:`WeightEma` wraps ``torch.optim.swa_utils.AveragedModel`` (buffers averaged too) and is
updated after every optimizer step by :class:`EmaCallback`. Around each evaluation and checkpoint the
EMA weights are swapped into the model (:meth:`WeightEma.swapped`): the best checkpoint is picked by
the EMA's metric and holds the EMA's weights, so loading it at the end makes ``model/`` the EMA. The
raw weights go beside them in the checkpoint (:data:`RAW_WEIGHTS`) so ``--resume`` continues the
optimisation where it stopped.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch
from transformers import TrainerCallback

RAW_WEIGHTS = "vitune_raw_weights.safetensors"  # in a checkpoint: the weights being optimised (not the EMA)


class WeightEma:
    """EMA of ``model``'s weights with ``decay`` (timm's ModelEma: ``ema = decay * ema + (1 - decay) * w``)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self.decay = decay
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.averaged.requires_grad_(False)

    def update(self, model: torch.nn.Module) -> None:
        """One EMA step towards ``model``'s current weights."""
        self.averaged.update_parameters(model)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA weights, keyed as the model's ``state_dict``."""
        return self.averaged.module.state_dict()

    @contextlib.contextmanager
    def swapped(self, model: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
        """``model`` holds the EMA weights inside the block; yields (a copy of) its raw weights."""
        raw = {name: value.detach().clone() for name, value in model.state_dict().items()}
        model.load_state_dict(self.state_dict(), strict=True)
        try:
            yield raw
        finally:
            model.load_state_dict(raw, strict=True)

    def resume(self, model: torch.nn.Module, checkpoint_dir: str | Path) -> None:
        """After ``model`` got a checkpoint's (EMA) weights: they become the EMA, the raw ones go back in ``model``."""
        from safetensors.torch import load_file

        self.averaged.module.load_state_dict(model.state_dict(), strict=True)
        self.averaged.n_averaged.fill_(1)
        raw = load_file(str(Path(checkpoint_dir) / RAW_WEIGHTS), device=str(next(model.parameters()).device))
        model.load_state_dict(raw, strict=True)


def save_raw_weights(raw: dict[str, torch.Tensor], checkpoint_dir: str | Path) -> None:
    """Write the raw (optimised) weights into a checkpoint, beside the EMA ones."""
    from safetensors.torch import save_file

    save_file({name: value.contiguous() for name, value in raw.items()}, str(Path(checkpoint_dir) / RAW_WEIGHTS))


class EmaCallback(TrainerCallback):
    """Update the EMA after each optimizer step."""

    def __init__(self, ema: WeightEma, unwrap) -> None:
        self.ema = ema
        self.unwrap = unwrap

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.ema.update(self.unwrap(model))


def add_ema(trainer, decay: float) -> None:
    """``--ema``: the EMA of the trainer's model (on its device, where the Trainer placed it) and its updates.

    Whole weights on each process: :class:`~vitune.config.TrainConfig` refuses it with ``--deepspeed`` or ``--fsdp``.
    """
    trainer.ema = WeightEma(trainer.model, decay)
    trainer.add_callback(EmaCallback(trainer.ema, trainer.accelerator.unwrap_model))
