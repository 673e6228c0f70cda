"""`vitune train --folds K`: patient-grouped k-fold cross-validation, K fine-tuning runs and ``cv.json``.

The folds are :mod:`vitune.data.folds`'s: drawn from train+validation with whole patients per fold, the
test split untouched. Fold I is an ordinary `vitune train` run in ``RUN_DIR/fold-I/`` (its
``config.yaml`` says ``folds: K, fold: I``), so evaluate, predict, export, explain and report work on
it; its validation is its held-out fold. The parent RUN_DIR holds the config (with ``folds``) and
``cv.json``: ``{"folds": [{"fold", "metrics", ...}], "mean", "std", ...}``, the metrics being each
fold's validation metrics (its ``metrics.json``), the mean and the standard deviation (numpy's, over the
folds where the metric is defined) per metric. `vitune evaluate RUN_DIR` then scores the folds' ensemble.

``--resume`` finishes a cross-validation: a fold with its ``model/`` and ``metrics.json`` is kept as it
is, a fold with checkpoints continues from the last one, a fold not begun starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitune.config import TrainConfig
from vitune.data.dataset_dir import load_dataset_dir
from vitune.data.folds import FoldPlan, check_fold, fold_splits, plan_folds
from vitune.errors import UserError
from vitune.storage.atomic import write_atomic
from vitune.storage.layout import RunDir
from vitune.storage.lock import OutputLock
from vitune.tasks import get_task
from vitune.training.fine_tune import main_process, train

log = logging.getLogger(__name__)

STD_DDOF = 0  # numpy's default (and what sklearn's cross-validation examples report): the folds' spread itself


@dataclass
class CrossValidationResult:
    """What a cross-validation produced: the parent RUN_DIR, the contents of ``cv.json``, the folds kept as they were."""

    run_dir: Path
    document: dict
    kept: list[int]


def fold_config(config: TrainConfig, fold: int) -> TrainConfig:
    """The settings of fold ``fold``'s run: ``config`` with ``fold`` set, into ``RUN_DIR/fold-<fold>``,
    resumed when that fold has checkpoints (under ``--resume``)."""
    from transformers.trainer_utils import get_last_checkpoint

    checkpoints = RunDir(RunDir(config.out).fold(fold)).checkpoints
    begun = checkpoints.is_dir() and get_last_checkpoint(str(checkpoints)) is not None
    return dataclasses.replace(config, fold=fold, out=str(checkpoints.parent), resume=config.resume and begun)


def is_finished(run: RunDir) -> bool:
    """Whether a fold's run is complete: its model and its ``metrics.json`` are written."""
    return run.is_run() and run.metrics.is_file()


def summarize(entries: list[dict]) -> tuple[dict, dict]:
    """The mean and standard deviation of each metric over the folds that define it (None where no fold does)."""
    names = list(dict.fromkeys(name for entry in entries for name in entry["metrics"]))
    mean, std = {}, {}
    for name in names:
        values = [entry["metrics"].get(name) for entry in entries]
        defined = np.array([value for value in values if value is not None], dtype=np.float64)
        mean[name] = float(np.mean(defined)) if len(defined) else None
        std[name] = float(np.std(defined, ddof=STD_DDOF)) if len(defined) else None
    return mean, std


def cv_document(config: TrainConfig, plan: FoldPlan, task_name: str) -> dict:
    """``cv.json``: each fold's validation metrics and sizes, their mean and std, and how the folds were drawn."""
    entries = []
    for fold in range(plan.folds):
        run = RunDir(RunDir(config.out).fold(fold))
        metrics = json.loads(run.metrics.read_text())
        entries.append({"fold": fold, "metrics": metrics["metrics"], "run": run.root.name, **plan.sizes(fold)})
    mean, std = summarize(entries)
    return {"folds": entries, "mean": mean, "std": std, "std_ddof": STD_DDOF, "k": plan.folds, "task": task_name,
            "main_metric": get_task(task_name).main_metric, "grouped_by": "group (patient)",
            "stratified_on": plan.stratified_on, "seed": config.seed, "data": str(Path(config.data).resolve())}


def _check_parent(config: TrainConfig, parent: RunDir) -> None:
    """A new cross-validation needs a fresh RUN_DIR; ``--resume`` one begun with the same folds, seed and data."""
    if parent.is_run() or parent.checkpoints.is_dir():
        raise UserError(f"{parent.root} holds a single run, not a cross-validation: choose a new --out for --folds")
    begun = [path.name for path in sorted(parent.root.glob("fold-*"))]
    if not config.resume and (begun or parent.cv.is_file()):
        raise UserError(f"{parent.root} already holds a cross-validation ({', '.join(begun) or parent.cv.name}): "
                        "add --resume to finish its unfinished folds or choose a new --out")
    saved = parent.read_config()
    if not config.resume or not saved:
        return
    given = {"folds": config.folds, "seed": config.seed, "data": str(Path(config.data).resolve())}
    for name, value in given.items():
        if saved.get(name) != value:
            raise UserError(f"--resume: {parent.config} has {name} {saved.get(name)!r}, not {value!r}: the folds "
                            f"would differ; resume with --{name} {saved.get(name)} or choose a new --out")


def cross_validate(config: TrainConfig) -> CrossValidationResult:
    """Train the ``config.folds`` folds of a patient-grouped cross-validation into ``config.out`` and write ``cv.json``.

    Each fold is :func:`vitune.training.fine_tune.train` on its fold's train and validation (see the module
    docstring); the folds are drawn, and ``K`` checked against the number of patients, before any training.
    """
    if config.folds is None or config.fold is not None:
        raise UserError("cross_validate trains every fold of --folds K: set folds and leave fold unset")
    ds, info = load_dataset_dir(config.data)
    plan = plan_folds(ds, info, config.data, config.folds, config.seed)
    parent = RunDir(config.out)
    lock = OutputLock(parent.root) if main_process() else contextlib.nullcontext()
    with lock:
        _check_parent(config, parent)
        if main_process():
            parent.root.mkdir(parents=True, exist_ok=True)
            config.save(parent.config)
        kept = []
        for fold in range(config.folds):
            run = RunDir(parent.fold(fold))
            if is_finished(run):
                check_fold(run, fold_splits(ds, plan, fold, config.data)["validation"])
                log.info("fold %d/%d: %s is finished, kept as it is", fold + 1, config.folds, run.root)
                kept.append(fold)
                continue
            sizes = plan.sizes(fold)
            log.info("fold %d/%d: %d train / %d validation images (%d patients) -> %s", fold + 1, config.folds,
                     sizes["train"], sizes["validation"], sizes["validation_patients"], run.root)
            train(fold_config(config, fold))
        if not main_process():  # under torchrun the main process writes and reports
            return CrossValidationResult(parent.root, {}, kept)
        document = cv_document(config, plan, info.task)
        write_atomic(parent.cv, json.dumps(document, indent=2) + "\n")
    return CrossValidationResult(parent.root, document, kept)
