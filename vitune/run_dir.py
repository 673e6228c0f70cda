"""RUN_DIR: its file layout (:class:`RunDir`) and its trained model read back (:class:`Run`).

A RUN_DIR made by ``vitune train`` holds ``model/`` (``save_pretrained`` classifier plus its image
processor), ``metrics.json``, ``plots/``, ``config.yaml`` (whose ``data`` is the DATASET_DIR) and
``checkpoints/``; ``vitune heads`` adds ``heads/``, ``vitune evaluate`` adds ``eval/<split>/`` and
``thresholds.json`` (per-label decision thresholds tuned on validation), ``vitune report`` adds
``report.html``. Writers, readers and tests all take these names from :class:`RunDir`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import yaml

from vitune.data.dataset_dir import DatasetInfo, require_image_size
from vitune.embeddings import Encoder
from vitune.errors import UserError
from vitune.inference import batched_logits
from vitune.models import Preprocessing, resolve_model
from vitune.tasks import Task, task_of_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDir:
    """The paths inside one RUN_DIR (nothing is read or created by building it)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())

    model = property(lambda self: self.root / "model", doc="``model/``: the fine-tuned classifier and processor.")
    config = property(lambda self: self.root / "config.yaml", doc="``config.yaml``: the resolved TrainConfig.")
    metrics = property(lambda self: self.root / "metrics.json", doc="``metrics.json``: validation, best epoch.")
    plots = property(lambda self: self.root / "plots", doc="``plots/``: loss, lr, roc, confusion.")
    checkpoints = property(lambda self: self.root / "checkpoints", doc="``checkpoints/`` for ``--resume``.")
    thresholds = property(lambda self: self.root / "thresholds.json", doc="``thresholds.json`` from evaluate.")
    heads = property(lambda self: self.root / "heads", doc="``heads/``: the default heads directory.")
    report = property(lambda self: self.root / "report.html", doc="``report.html``.")

    def eval_dir(self, split: str) -> Path:
        """``eval/<split>/``: what ``vitune evaluate`` writes for ``split``."""
        return self.root / "eval" / split

    def eval_metrics(self, split: str) -> Path:
        """``eval/<split>/metrics_<split>.json``."""
        return self.eval_dir(split) / f"metrics_{split}.json"

    def evaluated(self) -> list[Path]:
        """Every ``eval/*/metrics_*.json`` there is, sorted."""
        return sorted((self.root / "eval").glob("*/metrics_*.json"))

    def is_run(self) -> bool:
        """Whether a trained model is there (``model/config.json``)."""
        return (self.model / "config.json").is_file()

    def require(self) -> "RunDir":
        """This RUN_DIR, or a clear error when it does not exist or holds no trained model."""
        if not self.root.is_dir():
            raise UserError(f"RUN_DIR {self.root} does not exist: give the --out folder of `vitune train`")
        if not self.is_run():
            raise UserError(f"{self.root} is not a vitune run (no model/config.json): "
                            "give the --out folder of `vitune train`")
        return self

    def read_config(self) -> dict:
        """``config.yaml`` as a dict (empty when absent)."""
        if not self.config.is_file():
            return {}
        values = yaml.safe_load(self.config.read_text()) or {}
        return values if isinstance(values, dict) else {}

    def dataset_dir(self, data: Path | str | None = None) -> Path:
        """The DATASET_DIR to use: ``data`` when given, else the one the run was trained on."""
        if data is not None:
            return Path(data)
        recorded = self.read_config().get("data")
        if not recorded:
            raise UserError(f"{self.config} names no dataset: pass --data DATASET_DIR")
        if not Path(recorded).exists():
            raise UserError(f"the run's dataset {recorded} (from {self.config.name}) does not exist here: "
                            "pass --data DATASET_DIR")
        return Path(recorded)

    def save_thresholds(self, thresholds: dict[str, float], details: dict) -> Path:
        """Write ``thresholds.json``: ``{"thresholds": {label: t}, ...details}``."""
        self.thresholds.write_text(json.dumps({"thresholds": thresholds, **details}, indent=2) + "\n")
        return self.thresholds

    def load_thresholds(self, labels: list[str]) -> np.ndarray | None:
        """Per-label thresholds from ``thresholds.json`` in ``labels`` order, or None when absent."""
        if not self.thresholds.is_file():
            return None
        saved = json.loads(self.thresholds.read_text()).get("thresholds", {})
        missing = [name for name in labels if name not in saved]
        if missing:
            raise UserError(f"{self.thresholds} has no threshold for {', '.join(missing)}: run `vitune evaluate` again")
        return np.array([float(saved[name]) for name in labels])


class Run(Encoder):
    """A RUN_DIR's model: config, task, labels and preprocessing at once, weights on first use.

    As an :class:`Encoder` it embeds images with the fine-tuned backbone, the classifier's
    logits coming out of the same forward pass.
    """

    is_run = True

    def __init__(self, run_dir: Path | str, device: torch.device | str | None = None):
        self.dir = RunDir(run_dir).require()
        super().__init__(self.dir.model, name=str(run_dir), device=device)
        self.config  # a damaged config is reported now, not at first use

    @property
    def run_dir(self) -> Path:
        """The RUN_DIR folder."""
        return self.dir.root

    @cached_property
    def task(self) -> Task:
        """The task the model was trained for (from its ``problem_type``)."""
        return task_of_config(self.config)

    @cached_property
    def labels(self) -> list[str]:
        """The model's output names in order (``["score"]`` for regression)."""
        return [str(self.config.id2label[i]) for i in sorted(self.config.id2label)]

    @property
    def prep(self) -> Preprocessing:
        """What the model expects of its input."""
        return self.preprocessing

    def _auto_class(self):
        from transformers import AutoModelForImageClassification

        return AutoModelForImageClassification

    @property
    def model(self) -> torch.nn.Module:
        """The classifier (safetensors only), float32 in eval mode on ``device``."""
        return self.net

    def logits(self, batches: Iterable[np.ndarray]) -> np.ndarray:
        """Logits ``[N, K]`` over uint8 pixel batches."""
        return batched_logits(self.model, batches, self.prep, self.device)

    def scores(self, batches: Iterable[np.ndarray]) -> np.ndarray:
        """Probabilities (classification) or target-unit predictions (regression) over uint8 batches."""
        return self.logits_to_scores(self.logits(batches))

    def logits_to_scores(self, logits: np.ndarray) -> np.ndarray:
        """This run's logits -> scores (sigmoid, softmax or unscaled regression output)."""
        return self.task.scores(logits, self.config)

    def thresholds(self) -> np.ndarray | None:
        """Tuned multi-label decision thresholds, when the task has them and evaluate wrote them."""
        return self.dir.load_thresholds(self.labels) if self.task.tunes_thresholds else None

    def check_dataset(self, info: DatasetInfo, dataset_dir: Path | str) -> None:
        """Fail clearly when a DATASET_DIR's task, labels or image size do not fit this run's model."""
        if info.task != self.task.name or self.task.output_names(info.labels) != self.labels:
            raise UserError(
                f"{dataset_dir} is a {info.task} dataset with labels {info.labels}, but the run {self.name} was "
                f"trained for {self.task.name} {self.labels}: pass the dataset the run was trained on (--data)"
            )
        require_image_size(info, dataset_dir, self.prep.image_size, self.name)


def load_run(run_dir: Path | str, device: torch.device | str | None = None) -> Run:
    """Open ``RUN_DIR/model`` with the preprocessing it was trained with (weights load on first use)."""
    return Run(run_dir, device)


def open_model(model: str | Path, device: torch.device | str | None = None, trust_remote_code: bool = False) -> Encoder:
    """A :class:`Run` when ``model`` is a RUN_DIR, else the checkpoint (alias, Hub id, directory) as an :class:`Encoder`."""
    if RunDir(model).is_run():
        return Run(model, device)
    return Encoder(resolve_model(str(model)), name=str(model), device=device, trust_remote_code=trust_remote_code)
