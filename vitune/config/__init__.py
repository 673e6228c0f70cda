"""Command settings: one config dataclass per command, each checking itself on construction.

:class:`CommandConfig` (``base``) is what they share: defaults defined once on the dataclass (the
CLI reads help and defaults from there), ``to_dict`` / ``from_dict`` and the checks that turn a bad
value into a :class:`~vitune.errors.UserError` naming the flag and what to give. ``train`` holds
:class:`TrainConfig` (saved as ``RUN_DIR/config.yaml``), ``tune`` :class:`TuneConfig` and its search
space, ``serve`` :class:`ServeConfig`, ``commands`` the other commands' configs.
This package imports no ML library, so the CLI starts fast.
"""

from vitune.config.base import (
    HEAD_NAMES,
    MODEL_HEAD,
    POOLINGS,
    SPLIT_METHODS,
    CommandConfig,
    check_choice,
    check_pooling,
    check_positive,
    parse_heads,
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
from vitune.config.serve import ServeConfig
from vitune.config.train import LOCAL_PATHS, TrainConfig
from vitune.config.tune import TuneConfig

__all__ = [
    "EXPLAIN_METHODS", "HEAD_NAMES", "LOCAL_PATHS", "MODEL_HEAD", "POOLINGS", "SPLIT_METHODS", "CommandConfig",
    "DemoConfig", "EvaluateConfig", "ExplainConfig", "ExportConfig", "HeadsConfig", "PredictConfig", "PrepareConfig",
    "ReportConfig", "ServeConfig", "ShowConfig", "TrainConfig", "TuneConfig", "check_choice", "check_pooling",
    "check_positive", "parse_heads", "parse_labels",
]
