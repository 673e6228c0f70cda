"""The three tasks and their registry: ``multi_label``, ``single_label`` and ``regression``.

Each task's behaviour (label encoding, loss, metrics and their bootstrap, heads, prediction rows)
lives in its own module; :mod:`vitune.tasks.base` is the interface they share. Code elsewhere asks
the task object (``get_task(info.task).loss(...)``) instead of comparing task names; the names are
the strings written into ``dataset.json``, ``metrics.json`` and the model config's ``problem_type``.
"""

from __future__ import annotations

import numpy as np

from vitune.errors import UserError
from vitune.tasks.base import Task
from vitune.tasks.metrics import MetricsResult
from vitune.tasks.multi_label import MULTI_LABEL
from vitune.tasks.regression import REGRESSION
from vitune.tasks.single_label import SINGLE_LABEL

TASKS: dict[str, Task] = {task.name: task for task in (SINGLE_LABEL, MULTI_LABEL, REGRESSION)}
TASK_NAMES = tuple(TASKS)

__all__ = ["MULTI_LABEL", "REGRESSION", "SINGLE_LABEL", "TASKS", "TASK_NAMES", "MetricsResult", "Task",
           "compute_metrics", "get_task", "task_of_config"]


def get_task(task: str | Task) -> Task:
    """The :class:`Task` named ``task`` (a Task is returned as is); an unknown name is a :class:`UserError`."""
    if isinstance(task, Task):
        return task
    try:
        return TASKS[task]
    except (KeyError, TypeError):
        raise UserError(f"unknown task {task!r}: use one of {', '.join(TASK_NAMES)}") from None


def task_of_config(config) -> Task:
    """The task of a classification model config, from its ``problem_type`` (single_label when unset)."""
    by_problem_type = {task.problem_type: task for task in TASKS.values()}
    return by_problem_type.get(getattr(config, "problem_type", None) or "", SINGLE_LABEL)


def compute_metrics(
    task: str | Task,
    y_true: np.ndarray,
    scores: np.ndarray,
    labels: list[str],
    thresholds: np.ndarray | float = 0.5,
) -> MetricsResult:
    """Metrics for ``task`` from targets and scores (see :meth:`Task.metrics`).

    ``scores`` are probabilities for classification (sigmoid per label for multi_label, softmax
    over classes for single_label) and predictions in target units for regression.
    """
    return get_task(task).metrics(y_true, scores, labels, thresholds)
