"""Command settings: one config dataclass per command, each checking its values on construction.

:class:`CommandConfig` (``base``) is what they share: defaults and help defined once on the dataclass
(the CLI is generated from them), ``to_dict`` / ``to_yaml`` / ``from_flags`` and the checks that turn a
bad value into a :class:`~vitune.errors.UserError` naming the flag and what to give. Constructing a
config reads no file; ``from_flags`` / ``from_yaml`` read a ``--config`` file (and a ``--recipe`` preset). ``train`` holds
:class:`TrainConfig` (saved as ``RUN_DIR/config.yaml``) and :class:`TrainerConfig`, the settings it shares with
``pretrain``'s :class:`PretrainConfig`, ``tune`` :class:`TuneConfig` and its search
space, ``serve`` :class:`ServeConfig`, ``commands`` the other commands' configs.
This package imports no ML library, so the CLI starts fast.
"""

from vitune.config.base import (
    BACKENDS,
    HEAD_NAMES,
    MODEL_HEAD,
    POOLINGS,
    SPLIT_METHODS,
    TTA_MODES,
    CommandConfig,
    check_choice,
    check_pooling,
    check_positive,
    parse_heads,
    split_names,
)
from vitune.config.commands import (
    DemoConfig,
    EvaluateConfig,
    ExportConfig,
    HeadsConfig,
    PredictConfig,
    PrepareConfig,
    ReportConfig,
    ShowConfig,
)
from vitune.config.explain import EXPLAIN_METHODS, ExplainConfig, parse_labels
from vitune.config.pretrain import PretrainConfig
from vitune.config.serve import ServeConfig
from vitune.config.train import LOCAL_PATHS, TRAINING_ARGUMENTS, TrainConfig, TrainerConfig
from vitune.config.tune import TuneConfig

__all__ = [
    "BACKENDS", "EXPLAIN_METHODS", "HEAD_NAMES", "LOCAL_PATHS", "MODEL_HEAD", "POOLINGS", "SPLIT_METHODS", "TRAINING_ARGUMENTS", "TTA_MODES",
    "CommandConfig",
    "DemoConfig", "EvaluateConfig", "ExplainConfig", "ExportConfig", "HeadsConfig", "PredictConfig", "PrepareConfig",
    "PretrainConfig", "ReportConfig", "ServeConfig", "ShowConfig", "TrainConfig", "TrainerConfig", "TuneConfig",
    "check_choice", "check_pooling", "check_positive", "parse_heads", "parse_labels", "split_names",
]
