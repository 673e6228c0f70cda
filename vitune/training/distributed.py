"""The engine a run trains on: DDP, DeepSpeed ZeRO or FSDP, each as ``transformers.TrainingArguments`` settings.

* **DDP** is the Trainer's own whenever a launcher (``torchrun``, ``accelerate launch``) starts several
  processes: nothing to set here.
* **DeepSpeed ZeRO** (``--deepspeed zero2|zero3|PATH.json``): the JSON config, read here and handed to
  the Trainer as a dict, whose ``"auto"`` values the Trainer fills from the run's settings. Under
  ZeRO-3 the weights are partitioned across the processes, so the config is made to gather them
  when the Trainer saves (``stage3_gather_16bit_weights_on_model_save``): ``model/`` always holds
  the full weights, whatever the file says.
* **FSDP** (``--fsdp full_shard|shard_grad_op``): PyTorch's ``fully_shard`` (FSDP2) through the
  Trainer, each encoder layer of the model's family (:attr:`vitune.models.families.Family.encoder_layer`)
  a unit of its own, and full (gathered) state dicts in checkpoints and in ``model/``.

On a machine without a GPU the same code runs on CPU processes over gloo: DeepSpeed is told to use
its CPU accelerator (``DS_ACCELERATOR=cpu``) so that the user sets no environment variable, and the
Trainer keeps the optimizer it builds (torch's AdamW, vitune's parameter groups) since the shipped
configs name none.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from vitune.config import TrainConfig, TrainerConfig
from vitune.config.train import deepspeed_config_path
from vitune.errors import UserError
from vitune.models.families import Family, model_types_with

# DeepSpeed's switch for its accelerator; without it, DeepSpeed guesses (and says so on every process)
DEEPSPEED_ACCELERATOR = "DS_ACCELERATOR"
GATHER_ON_SAVE = "stage3_gather_16bit_weights_on_model_save"


def engine_arguments(config: TrainerConfig, family: Family) -> dict:
    """The ``TrainingArguments`` values of ``config``'s engine (none for one process or DDP).

    FSDP wraps the encoder layers of ``family``, the family of the model trained.
    """
    use_cpu_accelerator_without_gpu()  # before DeepSpeed's import, which accelerate does for every engine
    if config.deepspeed is not None:
        return {"deepspeed": deepspeed_settings(config)}
    if config.fsdp is not None:
        return {"fsdp": True, "fsdp_config": fsdp_settings(config.fsdp, family)}
    return {}


def deepspeed_settings(config: TrainConfig) -> dict:
    """The DeepSpeed config of ``config.deepspeed`` (a preset or a JSON file), set to save full weights.

    Raises :class:`UserError` when DeepSpeed is not installed, the file is missing or not a JSON
    object, or when LoRA meets ZeRO-3 (the adapters would be saved from partitioned weights).
    """
    if importlib.util.find_spec("deepspeed") is None:
        raise UserError("--deepspeed needs DeepSpeed: pip install 'vitune[deepspeed]' (or drop --deepspeed)")
    path = deepspeed_config_path(config.deepspeed)
    if not path.is_file():
        raise UserError(f"--deepspeed {config.deepspeed} does not exist: give zero2, zero3 or a DeepSpeed JSON "
                        "config file")
    try:
        settings = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"--deepspeed {config.deepspeed} is not valid JSON: {exc}") from exc
    if not isinstance(settings, dict):
        raise UserError(f"--deepspeed {config.deepspeed} must hold a JSON object of DeepSpeed settings")
    zero = settings.get("zero_optimization") or {}
    if zero.get("stage") == 3:
        if config.lora:
            raise UserError("--lora trains adapters small enough to keep whole on each process, which ZeRO-3 "
                            "partitions: use --deepspeed zero2 or DDP (torchrun) with --lora")
        settings["zero_optimization"] = {**zero, GATHER_ON_SAVE: True}
    # DeepSpeed 0.19 still calls the collectives torch 2.x renamed: one warning per call site and process
    warnings.filterwarnings("ignore", r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated",
                            FutureWarning)
    return settings


def fsdp_settings(mode: str, family: Family) -> dict:
    """The Trainer's ``fsdp_config`` for ``--fsdp mode``: FSDP2, each encoder layer of ``family`` wrapped alone.

    ``family`` is that of the model trained (a classifier's, or ViT-MAE's for its pre-training).
    ``full_shard`` reshards the weights after each layer's forward pass (ZeRO-3-like), ``shard_grad_op``
    keeps them gathered until the backward pass (ZeRO-2-like: more memory, less communication).
    """
    if not family.supports_fsdp:
        raise UserError(f"--fsdp wraps each encoder layer of the model, which vitune knows for "
                        f"{model_types_with('supports_fsdp')}, not {family.model_type!r}: use --deepspeed or DDP")
    return {
        "version": 2,
        "reshard_after_forward": mode == "full_shard",
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": [family.encoder_layer],
        "state_dict_type": "FULL_STATE_DICT",  # checkpoints and model/ hold whole weights, written by rank 0
    }


@contextmanager
def whole_models(args) -> Iterator[None]:
    """Models loaded inside are whole on this process, also while a ZeRO-3 run is live.

    Under ZeRO-3 transformers partitions every model ``from_pretrained`` loads (``deepspeed.zero.Init``),
    which broadcasts between the processes: one process alone (rank 0 reading back the saved model) would
    wait for the others forever. The run's DeepSpeed config (``args``: its ``TrainingArguments``) is set
    aside inside and put back after, through transformers' own setter.
    """
    from transformers.integrations.deepspeed import (
        is_deepspeed_zero3_enabled,
        set_hf_deepspeed_config,
        unset_hf_deepspeed_config,
    )

    if not is_deepspeed_zero3_enabled():
        yield
        return
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(args.hf_deepspeed_config)


def use_cpu_accelerator_without_gpu() -> None:
    """Point DeepSpeed at its CPU accelerator (gloo between processes) when torch sees no GPU or other accelerator.

    Set before DeepSpeed first looks for an accelerator (else it guesses, and warns on every process);
    a value the user set is kept.
    """
    if not torch.accelerator.is_available():
        os.environ.setdefault(DEEPSPEED_ACCELERATOR, "cpu")


def shard_on_cpu_processes(accelerator, fsdp_plugin_args: dict | None) -> bool:
    """Turn FSDP on for CPU processes, where accelerate leaves it off; True when it did.

    accelerate (checked in 1.16, ``AcceleratorState.__init__``) enables FSDP only for GPU-like
    distributed types, so on CPU processes over gloo (``MULTI_CPU``) a ``--fsdp`` run would silently
    train as DDP. torch's ``fully_shard`` runs on CPU over gloo, so the state is switched to FSDP with
    the plugin the Trainer built from ``fsdp_plugin_args``: from there on, accelerate and the Trainer take
    the very path a GPU run takes (``fsdp2_prepare_model``, full state dicts on save). One process
    (no launcher) has nothing to shard and trains as it is, as it does on one GPU.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if fsdp_plugin_args is None or state.distributed_type is not DistributedType.MULTI_CPU:
        return False
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**fsdp_plugin_args)
    state.distributed_type = DistributedType.FSDP
    # as AcceleratorState.__init__ does: each later AcceleratorState() copies the type back from PartialState
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return True
