"""Patient-grouped k-fold cross-validation folds of a DATASET_DIR (`vitune train --folds K`).

The folds are drawn from the ``train`` and ``validation`` splits pooled; the ``test`` split is never
touched. Fold I's validation is the I-th fold, its train the other K - 1. A patient (the ``group``
column, which :mod:`vitune.data.splits` also keeps whole; an image without a group is its own
patient) lands in exactly one fold, so no patient's images are ever on both sides of a fold.

The folds come from scikit-learn's ``StratifiedGroupKFold`` (shuffled with the run's seed), which
takes one class per image. That class is the image's *rarest* stratum among the task's strata
(:meth:`vitune.tasks.base.Task.strata`): single-label its class, regression its quantile bin,
multi-label its rarest positive finding, with "no finding" (all zero or unknown) a class of its
own. A rare finding is what a fold most easily misses, and a fold's validation without a label has
no AUC for it, so each fold's macro mean would average other labels; the common findings spread
evenly anyway. When no class has K images, the folds are grouped only (``GroupKFold``, shuffled).

The folds are drawn again, the same, wherever a fold's run is read (:func:`open_run_dataset`): a
fold run's ``config.yaml`` holds ``folds``, ``fold`` and ``seed``, and its ``metrics.json`` the SHA-256
of its validation's file names (:func:`fold_record`), so folds drawn otherwise (another scikit-learn, a
dataset prepared again) are refused rather than silently validated on images the model trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from vitune.data.dataset_dir import DatasetInfo, load_dataset_dir, require_split
from vitune.errors import UserError
from vitune.storage.layout import RunDir
from vitune.tasks import get_task

log = logging.getLogger(__name__)

# what each task's folds are stratified on, for cv.json and the report
STRATA = {"multi_label": "each image's rarest positive finding (no finding: a class of its own)",
          "single_label": "the class", "regression": "the target's quantile bin"}
GROUPED_ONLY = "nothing (no class has K images): grouped by patient only"


@dataclass(frozen=True)
class FoldPlan:
    """The K folds of a DATASET_DIR's pooled train and validation rows.

    ``fold_of_row`` gives each pooled row's fold (train rows first, then validation, in their
    order); ``groups`` each pooled row's patient; ``stratified_on`` says what the folds balance.
    """

    folds: int
    fold_of_row: np.ndarray
    groups: np.ndarray
    stratified_on: str

    def rows(self, fold: int, held_out: bool) -> np.ndarray:
        """The pooled rows of fold ``fold``'s validation (``held_out``) or of its train, ascending."""
        return np.flatnonzero((self.fold_of_row == fold) == held_out)

    def sizes(self, fold: int) -> dict[str, int]:
        """Fold ``fold``'s images and patients: ``{"train", "validation", "validation_patients"}``."""
        validation = self.rows(fold, held_out=True)
        return {"train": len(self.fold_of_row) - len(validation), "validation": len(validation),
                "validation_patients": len(np.unique(self.groups[validation]))}


def row_groups(groups: list[str | None]) -> np.ndarray:
    """Each row's patient: its ``group``, or a key of its own when it has none (as the split code treats it)."""
    return np.array([group if group else f"\0row-{index}" for index, group in enumerate(groups)], dtype=object)


def rarest_stratum(strata: np.ndarray) -> np.ndarray:
    """Per row the rarest of its strata columns (fewest rows overall); ``k`` (a class of its own) for a row with none."""
    present = strata > 0
    column_counts = present.sum(axis=0)
    rarity = np.where(present, column_counts[None, :], np.iinfo(np.int64).max)
    rarest = np.argmin(rarity, axis=1) if strata.shape[1] else np.zeros(len(strata), dtype=np.int64)
    return np.where(present.any(axis=1), rarest, strata.shape[1])


def assign_folds(groups: np.ndarray, classes: np.ndarray, folds: int, seed: int) -> tuple[np.ndarray, bool]:
    """The fold of each row, whole patients per fold, stratified on ``classes`` when one has ``folds`` rows.

    Returns the folds and whether they are stratified. Raises a :class:`UserError` when there are fewer
    patients than folds.
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    patients = len(np.unique(groups))
    if folds > patients:
        raise UserError(f"--folds {folds} needs at least {folds} patients in train+validation, there are "
                        f"{patients}: use --folds {patients} or fewer")
    stratified = np.bincount(classes).max() >= folds
    if stratified:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_of_row = np.full(len(groups), -1, dtype=np.int64)
    with warnings.catch_warnings():  # a rare class in fewer folds than K is expected with rare findings
        warnings.filterwarnings("ignore", message="The least populated class")
        for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(groups)), classes, groups)):
            fold_of_row[held_out] = fold
    empty = sorted(set(range(folds)) - set(fold_of_row.tolist()))
    if empty:
        raise UserError(f"--folds {folds}: fold {empty[0]} would have no validation image; use fewer folds")
    return fold_of_row, stratified


def pooled_rows(ds: datasets.DatasetDict, dataset_dir: Path | str) -> datasets.Dataset:
    """The train and validation splits as one dataset, train rows first (no copy: Arrow tables side by side)."""
    pooled = [require_split(ds, "train", dataset_dir)]
    if "validation" in ds:
        pooled.append(ds["validation"])
    return datasets.concatenate_datasets(pooled)


def plan_folds(ds: datasets.DatasetDict, info: DatasetInfo, dataset_dir: Path | str, folds: int,
               seed: int) -> FoldPlan:
    """The folds of a DATASET_DIR's pooled train and validation rows (see the module docstring)."""
    pooled = pooled_rows(ds, dataset_dir)
    groups = row_groups(pooled["group"])
    labels = pooled.with_format("numpy", columns=["labels"])["labels"]
    classes = rarest_stratum(get_task(info.task).strata(labels))
    fold_of_row, stratified = assign_folds(groups, classes, folds, seed)
    return FoldPlan(folds, fold_of_row, groups, STRATA[info.task] if stratified else GROUPED_ONLY)


def fold_splits(ds: datasets.DatasetDict, plan: FoldPlan, fold: int, dataset_dir: Path | str) -> datasets.DatasetDict:
    """The DatasetDict fold ``fold`` trains and validates on: its train and validation rows, the test split as it is."""
    pooled = pooled_rows(ds, dataset_dir)
    splits = {"train": pooled.select(plan.rows(fold, held_out=False)),
              "validation": pooled.select(plan.rows(fold, held_out=True))}
    if "test" in ds:
        splits["test"] = ds["test"]
    return datasets.DatasetDict(splits)


def load_fold(dataset_dir: Path | str, folds: int, fold: int, seed: int) -> tuple[datasets.DatasetDict, DatasetInfo]:
    """Open a DATASET_DIR as fold ``fold`` of ``folds`` (drawn with ``seed``) sees it; see :func:`fold_splits`."""
    ds, info = load_dataset_dir(dataset_dir)
    plan = plan_folds(ds, info, dataset_dir, folds, seed)
    return fold_splits(ds, plan, fold, dataset_dir), info


def load_run_dataset(dataset_dir: Path | str, settings: Mapping) -> tuple[datasets.DatasetDict, DatasetInfo]:
    """A DATASET_DIR as a run with these settings (its ``config.yaml``) saw it: a fold run's train and validation
    are its fold's, any other run's the splits as prepared."""
    if settings.get("fold") is None:
        return load_dataset_dir(dataset_dir)
    return load_fold(dataset_dir, int(settings["folds"]), int(settings["fold"]), int(settings.get("seed") or 0))


def files_digest(split: datasets.Dataset) -> str:
    """SHA-256 of a split's sorted ``file`` names: which images it holds, in 64 characters."""
    digest = hashlib.sha256()
    for name in sorted(split["file"]):
        digest.update(f"{name}\n".encode())
    return digest.hexdigest()


def fold_record(settings: Mapping, validation: datasets.Dataset) -> dict:
    """What a fold's ``metrics.json`` records of its fold: ``{"fold", "folds", "seed", "validation_files_sha256"}``."""
    return {"fold": settings["fold"], "folds": settings["folds"], "seed": settings.get("seed") or 0,
            "validation_files_sha256": files_digest(validation)}


def check_fold(run: RunDir, validation: datasets.Dataset) -> None:
    """A fold run's validation drawn now must be the one it trained with (its ``metrics.json``'s ``fold``)."""
    if not run.metrics.is_file():
        return
    recorded = (json.loads(run.metrics.read_text()).get("fold") or {}).get("validation_files_sha256")
    if recorded is not None and recorded != files_digest(validation):
        raise UserError(f"the folds drawn now differ from those {run.root} was trained on (a dataset prepared "
                        "again, or another scikit-learn): its validation would hold images it trained on; "
                        "train the cross-validation again")


def open_run_dataset(run: RunDir, data: Path | str | None = None) -> tuple[datasets.DatasetDict, DatasetInfo, Path]:
    """The DATASET_DIR to read a run with (``data``, else the run's own) and its splits as the run saw them.

    A fold run on its own dataset gets its fold's train and validation (so its thresholds are tuned on its
    held-out fold); another dataset (``--data``) was never trained on, and is read as prepared.
    """
    dataset_dir = run.dataset_dir(data)
    settings = run.read_config()
    recorded = settings.get("data")
    own = recorded is not None and Path(recorded).resolve() == Path(dataset_dir).resolve()
    ds, info = load_run_dataset(dataset_dir, settings if own else {})
    if own and settings.get("fold") is not None:
        check_fold(run, ds["validation"])
    return ds, info, dataset_dir
