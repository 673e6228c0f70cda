"""``--report-to``: the Trainer's TensorBoard, MLflow and W&B integrations, logging inside RUN_DIR.

TensorBoard writes its event files to ``RUN_DIR/tensorboard/`` (unless TENSORBOARD_LOGGING_DIR is
set). MLflow logs to a local file store, ``RUN_DIR/mlruns/``, unless MLFLOW_TRACKING_URI points
elsewhere (MLflow 3 keeps its file store in maintenance mode behind MLFLOW_ALLOW_FILE_STORE, which
vitune sets for that store only; a database store such as ``sqlite:///...`` takes seconds to create). W&B keeps its local
files in ``RUN_DIR/wandb/`` (unless WANDB_DIR is set) and syncs as its own settings say.
"""

from __future__ import annotations

import importlib.util
import os

from vitune.config import TrainConfig
from vitune.errors import UserError
from vitune.storage.layout import RunDir

# destination -> (module the Trainer's callback imports, what to pip install)
PACKAGES = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
            "mlflow": (("mlflow",), "mlflow-skinny"), "wandb": (("wandb",), "wandb")}
EXPERIMENT = "vitune"
_defaults_set: dict[str, str] = {}  # environment variables this module set (a later run may set them again)


def report_to(config: TrainConfig) -> list[str]:
    """The Trainer's ``report_to`` list for ``config``, each destination's package checked."""
    for name in config.report_to:
        modules, package = PACKAGES[name]
        if not any(importlib.util.find_spec(module) for module in modules):
            raise UserError(f"--report-to {name} needs the {package} package: pip install {package} "
                            "(or pip install 'vitune[tracking]')")
    return list(config.report_to)


def _default_env(name: str, value: str) -> None:
    """Set ``name`` unless the user did (a value this module set earlier is replaced)."""
    if name not in os.environ or os.environ[name] == _defaults_set.get(name):
        os.environ[name] = _defaults_set[name] = value


def _local_mlflow(run: RunDir) -> None:
    import mlflow

    _default_env("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(run.mlflow.resolve().as_uri())
    mlflow.set_experiment(EXPERIMENT)


def setup_tracking(trainer, config: TrainConfig) -> None:
    """Point the trainer's reporting callbacks into ``config.out`` (where the user set no place of their own)."""
    from transformers.integrations import TensorBoardCallback

    run = RunDir(config.out)
    if "tensorboard" in config.report_to and not os.environ.get("TENSORBOARD_LOGGING_DIR"):
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback):
                callback.logging_dir = str(run.tensorboard)
    if "mlflow" in config.report_to and not os.environ.get("MLFLOW_TRACKING_URI"):
        _local_mlflow(run)
    if "wandb" in config.report_to:
        _default_env("WANDB_DIR", str(run.root.resolve()))
