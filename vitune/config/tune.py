"""TuneConfig: the settings of `vitune tune`, and its search space (``--space FILE.yaml``).

A space file maps TrainConfig settings to a range or a list of choices::

    lr: {low: 1.0e-5, high: 1.0e-3, log: true}   # a range (log-uniform with log: true)
    batch_size: [16, 32, 64]                      # choices
    warmup: {low: 0.0, high: 0.3}
    weight_decay: {low: 0.0, high: 0.1}

Whole-number settings (batch_size, grad_accum) draw whole numbers from a range. The settings a trial
can change (:data:`SEARCHABLE`) are TrainingArguments fields; :data:`vitune.config.train.TRAINING_ARGUMENTS`
names the field each one sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vitune.config.base import CommandConfig, check_choice, check_count, check_positive
from vitune.errors import UserError

BACKENDS = ("optuna", "ray")
# the TrainConfig settings a trial may set (Trainer.hyperparameter_search sets their TrainingArguments fields)
SEARCHABLE = ("lr", "batch_size", "warmup", "weight_decay", "epochs", "grad_accum", "scheduler")
WHOLE_NUMBERS = ("batch_size", "grad_accum")
DEFAULT_SPACE = {
    "lr": {"low": 1e-5, "high": 1e-3, "log": True},
    "batch_size": [16, 32, 64],
    "warmup": {"low": 0.0, "high": 0.3},
    "weight_decay": {"low": 0.0, "high": 0.1},
}


@dataclass(frozen=True)
class Param:
    """One searched setting: a range ``[low, high]`` (``log``-uniform, whole numbers for ``integer``) or ``choices``."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple | None = None


def parse_param(name: str, spec: Any) -> Param:
    """A :class:`Param` from its space-file entry (a list of choices or ``{low, high, log}``)."""
    if name not in SEARCHABLE:
        raise UserError(f"the search space names {name!r}: searchable settings are {', '.join(SEARCHABLE)}")
    if isinstance(spec, list) and spec:
        return Param(name, choices=tuple(spec))
    if not isinstance(spec, dict) or set(spec) - {"low", "high", "log"} or not {"low", "high"} <= set(spec):
        raise UserError(f"search space {name}: give a list of choices or {{low: A, high: B, log: false}}, not {spec!r}")
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (TypeError, ValueError) as exc:
        raise UserError(f"search space {name}: low and high must be numbers, not {spec!r}") from exc
    log = bool(spec.get("log", False))
    if not low < high or (log and low <= 0):
        raise UserError(f"search space {name}: need low < high (and low > 0 with log: true), got {spec!r}")
    integer = name in WHOLE_NUMBERS
    return Param(name, int(low) if integer else low, int(high) if integer else high, log, integer)


def load_space(path: str | None) -> list[Param]:
    """The search space of ``--space FILE.yaml``, or :data:`DEFAULT_SPACE` without one."""
    if path is None:
        return [parse_param(name, spec) for name, spec in DEFAULT_SPACE.items()]
    if not Path(path).is_file():
        raise UserError(f"--space {path} does not exist: give a YAML file of setting: range or [choices]")
    try:
        values = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(values, dict) or not values:
        raise UserError(f"{path} must map settings to ranges or choices, e.g. lr: {{low: 1.0e-5, high: 1.0e-3}}")
    return [parse_param(str(name), spec) for name, spec in values.items()]


@dataclass
class TuneConfig(CommandConfig):
    """Settings of a hyper-parameter search (`vitune tune`).

    Args:
        data: DATASET_DIR from `vitune data prepare`.
        model: Alias (`vitune models`), Hub id or local checkpoint.
        out: Folder for tune.json, best.yaml and trials.png.
        trials: Number of trials.
        space: YAML search space (default: lr, batch size, warm-up, weight decay).
        backend: optuna|ray (Ray Tune: pip install 'ray[tune]').
        epochs: Training epochs of each trial.
        max_steps: Stop each trial after this many optimizer steps.
        base: TrainConfig YAML the trials start from (e.g. RUN_DIR/config.yaml).
        seed: Random seed of the trials and the sampler.
    """

    noun = "tune setting"
    usage = "vitune tune --data DATASET_DIR --model MODEL --out DIR"

    data: str
    model: str
    out: str
    trials: int = 10
    space: str | None = None
    backend: str = "optuna"
    epochs: float = 3
    max_steps: int | None = None
    base: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("data", "model", "out"):
            setattr(self, name, str(getattr(self, name)))
        check_count("trials", self.trials)
        check_choice("backend", self.backend, BACKENDS)
        check_positive("epochs", self.epochs)
        if self.max_steps is not None:
            check_count("max_steps", self.max_steps)

    def search_space(self) -> list[Param]:
        """The searched settings (``--space`` or the default space), read from the space file."""
        return load_space(self.space)
