"""A cross-validation parent RUN_DIR (`vitune train --folds K`) read back as one model: the folds' ensemble.

:class:`FoldEnsemble` answers what evaluate and predict ask of a :class:`~vitune.models.run.Run` (task,
labels, preprocessing, logits, scores, thresholds) for the K fold runs at once. Its logits are the
folds' side by side, ``[N, K, outputs]``; its scores are the mean of the folds' scores, each fold's
temperature-scaled by its own ``calibration.json`` (the folds' calibrated probabilities averaged:
Lakshminarayanan et al.'s deep-ensemble mean). Its thresholds are the parent's ``thresholds.json``,
written by `vitune evaluate PARENT`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from vitune.data.dataset_dir import DatasetInfo
from vitune.errors import UserError
from vitune.models.aliases import Preprocessing
from vitune.models.run import Run
from vitune.storage.layout import RunDir
from vitune.tasks import Task


class FoldEnsemble:
    """The fold runs of a cross-validation parent, scored together (their scores averaged)."""

    def __init__(self, run_dir: Path | str, device: torch.device | str | None = None, calibrate: bool = True):
        self.dir = RunDir(run_dir)
        self.name = str(run_dir)
        expected = json.loads(self.dir.cv.read_text()).get("k")
        paths = self.dir.folds()
        if not paths or (expected is not None and len(paths) != expected):
            raise UserError(f"{self.dir.root} holds {len(paths)} finished fold(s) of {expected}: finish them with "
                            f"`vitune train --config {self.dir.config} --resume`")
        self.folds = [Run(path, device, calibrate) for path in paths]
        first = self.folds[0]
        for fold in self.folds[1:]:
            if fold.labels != first.labels or fold.task.name != first.task.name or fold.prep != first.prep:
                raise UserError(f"{fold.run_dir} was trained for other labels, task or input than {first.run_dir}: "
                                "the folds of one cross-validation must match; train them again")

    @property
    def run_dir(self) -> Path:
        """The parent RUN_DIR."""
        return self.dir.root

    @property
    def device(self) -> torch.device:
        """The device the folds' models run on."""
        return self.folds[0].device

    @property
    def task(self) -> Task:
        """The folds' task."""
        return self.folds[0].task

    @property
    def labels(self) -> list[str]:
        """The folds' output names in order."""
        return self.folds[0].labels

    @property
    def prep(self) -> Preprocessing:
        """What the folds' models expect of their input (the same for every fold)."""
        return self.folds[0].prep

    @property
    def config(self):
        """The first fold's model config (task settings such as a regression's target range are every fold's)."""
        return self.folds[0].config

    @property
    def temperature(self) -> list[list[float] | None] | None:
        """Each fold's fitted temperatures (None for a fold without), or None when no fold is calibrated."""
        temperatures = [fold.temperature for fold in self.folds]
        return None if all(value is None for value in temperatures) else temperatures

    def logits(self, batches: Iterable[np.ndarray]) -> np.ndarray:
        """The folds' logits side by side, ``[N, K, outputs]``, over uint8 pixel batches."""
        per_batch = [np.stack([fold.logits([pixels]) for fold in self.folds], axis=1) for pixels in batches]
        return np.concatenate(per_batch)

    def logits_to_scores(self, logits: np.ndarray) -> np.ndarray:
        """The mean of the folds' scores (each temperature-scaled by its own calibration) of ``[N, K, outputs]`` logits."""
        return np.mean([fold.logits_to_scores(logits[:, index]) for index, fold in enumerate(self.folds)], axis=0)

    def uncalibrated_scores(self, logits: np.ndarray) -> np.ndarray:
        """The mean of the folds' scores without their temperatures."""
        return np.mean([fold.uncalibrated_scores(logits[:, index]) for index, fold in enumerate(self.folds)], axis=0)

    def scores(self, batches: Iterable[np.ndarray]) -> np.ndarray:
        """The ensemble's scores over uint8 batches."""
        return self.logits_to_scores(self.logits(batches))

    def thresholds(self) -> np.ndarray | None:
        """The ensemble's multi-label decision thresholds (the parent's ``thresholds.json``), when evaluate wrote them."""
        return self.dir.load_thresholds(self.labels) if self.task.tunes_thresholds else None

    def check_dataset(self, info: DatasetInfo, dataset_dir: Path | str) -> None:
        """Fail clearly when a DATASET_DIR does not fit the folds' models."""
        self.folds[0].check_dataset(info, dataset_dir)


def load_scoring_run(run_dir: Path | str, device: torch.device | str | None = None,
                     calibrate: bool = True) -> Run | FoldEnsemble:
    """What scores images for evaluate and predict: a RUN_DIR's :class:`Run`, or a cross-validation parent's
    (``cv.json``) :class:`FoldEnsemble`."""
    if RunDir(run_dir).cv.is_file():
        return FoldEnsemble(run_dir, device, calibrate)
    return Run(run_dir, device, calibrate)
