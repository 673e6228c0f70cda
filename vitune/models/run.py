"""RUN_DIR: its trained model read back (:class:`Run`); the folder layout is :class:`vitune.storage.layout.RunDir`.

A RUN_DIR made by ``vitune train`` holds ``model/`` (``save_pretrained`` classifier plus its image
processor), ``metrics.json``, ``plots/``, ``config.yaml`` (whose ``data`` is the DATASET_DIR) and
``checkpoints/``; ``vitune heads`` adds ``heads/``, ``vitune evaluate`` adds ``eval/<split>/`` and
``thresholds.json`` (per-label decision thresholds tuned on validation), ``vitune report`` adds
``report.html``. Writers, readers and tests all take these names from :class:`vitune.storage.layout.RunDir`.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from vitune.data.dataset_dir import DatasetInfo, require_image_size
from vitune.errors import UserError
from vitune.models.aliases import Preprocessing
from vitune.models.encoder import Encoder
from vitune.models.forward import batched_logits
from vitune.storage.layout import RunDir
from vitune.tasks import Task, task_of_config
from vitune.tasks.calibration import apply_temperature

log = logging.getLogger(__name__)


class Run(Encoder):
    """A RUN_DIR's model: config, task, labels and preprocessing at once, weights on first use.

    As an :class:`Encoder` it embeds images with the fine-tuned backbone, the classifier's
    logits coming out of the same forward pass.
    """

    is_run = True

    def __init__(self, run_dir: Path | str, device: torch.device | str | None = None, calibrate: bool = True):
        self.dir = RunDir(run_dir).require()
        self.calibrate = calibrate
        super().__init__(self.dir.model, name=str(run_dir), device=device)
        try:
            self.config  # a damaged config is reported now, not at first use
        except UserError as exc:
            raise UserError(f"cannot read the model config in {self.dir.model}: the RUN_DIR is damaged; "
                            "train it again or restore model/config.json") from exc

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

    @cached_property
    def temperature(self) -> list[float] | None:
        """The temperatures fitted on validation (``calibration.json``), None when absent or ``calibrate`` is off."""
        if not self.calibrate:
            return None
        return self.dir.load_temperature(len(self.labels))

    def logits_to_scores(self, logits: np.ndarray) -> np.ndarray:
        """This run's logits -> scores (sigmoid, softmax or unscaled regression output), temperature-scaled
        when the run has a fitted temperature and ``calibrate`` is on."""
        return self.task.scores(apply_temperature(logits, self.temperature), self.config)

    def uncalibrated_scores(self, logits: np.ndarray) -> np.ndarray:
        """This run's logits -> scores without its fitted temperature (what calibration is measured against)."""
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


def load_run(run_dir: Path | str, device: torch.device | str | None = None, calibrate: bool = True) -> Run:
    """Open ``RUN_DIR/model`` with the preprocessing it was trained with (weights load on first use);
    ``calibrate`` applies its fitted temperature (``calibration.json``) to the scores."""
    return Run(run_dir, device, calibrate)


def open_model(model: str | Path, device: torch.device | str | None = None, trust_remote_code: bool = False) -> Encoder:
    """A :class:`Run` when ``model`` is a RUN_DIR of `vitune train`, else the checkpoint (alias, Hub id, directory,
    a `vitune pretrain` RUN_DIR's encoder) as an :class:`Encoder`."""
    if RunDir(model).is_run() and not RunDir(model).is_pretraining():
        return Run(model, device)
    return Encoder(model, device=device, trust_remote_code=trust_remote_code)
