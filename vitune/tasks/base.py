"""The task interface: what one task means for data, training, metrics, heads and predictions.

Each task is a subclass of :class:`Task` in a module of its own (``multi_label``, ``single_label``,
``regression``) with one instance; :mod:`vitune.tasks` names them. Code elsewhere asks the task
object (``get_task(info.task).loss(...)``) instead of comparing task names.

torch, scikit-learn, scipy and datasets are imported inside the methods that use them, here and in
every task module: :mod:`vitune.config` imports this package for the task names, and starting the
CLI must not wait seconds for those libraries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from vitune.errors import UserError
from vitune.tasks.bootstrap import Replicates, percentile_intervals, resample_counts
from vitune.tasks.metrics import MetricsResult


class Task(ABC):
    """One task: capabilities are attributes (``is_classification``, ``tunes_thresholds``, ...), behaviour
    that differs is a method. Instances are singletons: compare them with ``is``.

    ``name`` is the string written into ``dataset.json`` and ``metrics.json``; ``problem_type`` the
    model config's.
    """

    name: str
    problem_type: str
    main_metric: str
    greater_is_better: bool
    metric_keys: tuple[str, ...]
    macro_auc: str | None = None  # the key of the macro AUC-ROC over labels, when there is one
    is_classification = True
    multi_output = False  # several 0/1 targets per image
    tunes_thresholds = False  # per-label decision thresholds tuned on validation
    takes_pos_weight = False  # --pos-weight auto applies
    default_split = "stratified"
    label_dtype = "int64"  # of the DATASET_DIR ``labels`` column

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    # --- data -----------------------------------------------------------------------------------

    def label_feature(self):
        """The ``datasets`` feature of the ``labels`` column: ``label_dtype`` per image, or a list of them."""
        import datasets

        value = datasets.Value(self.label_dtype)
        if self.multi_output:
            return datasets.Sequence(value)
        return value

    def output_names(self, labels: Sequence[str]) -> list[str]:
        """Names of the model outputs (``id2label``): the labels, or ``["score"]`` for regression."""
        return list(labels)

    @abstractmethod
    def encode(self, raw: Any, names: list[str], separator: str | None) -> Any:
        """The DATASET_DIR ``labels`` value of one raw label; a :class:`vitune.tasks.labels.BadLabel` otherwise."""

    @abstractmethod
    def strata(self, labels: Sequence[Any]) -> np.ndarray:
        """A 0/1 matrix ``[n, k]`` that stratified splitting balances."""

    @abstractmethod
    def label_text(self, value: Any, labels: Sequence[str]) -> str:
        """An encoded label as text for people: label names, or the value."""

    @abstractmethod
    def frequencies(self, values: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
        """Per label the number of images with it (regression: n, mean, min, max)."""

    def label_range(self, values: np.ndarray) -> tuple[float, float] | None:
        """The (min, max) a regression target is scaled with; None for classification."""
        return None

    # --- training -------------------------------------------------------------------------------

    @abstractmethod
    def batch_labels(self, values: list, label_range: Sequence[float] | None = None):
        """The label tensor of one batch, as the loss takes it."""

    @abstractmethod
    def loss(self, logits, labels, regression_loss: str = "mse", pos_weight=None, multi_label_loss=None):
        """Mean loss of a batch, in float32 whatever the autocast dtype (see :mod:`vitune.tasks.losses`);
        ``multi_label_loss`` (a :class:`vitune.tasks.losses.MultiLabelLoss`) is ``--loss`` of multi-label runs."""

    def soft_targets(self, labels, n_outputs: int, smoothing: float = 0.0):
        """Batch labels as float targets that mixup can blend, label smoothing ``smoothing`` applied."""
        return labels.float()

    # --- scores and metrics ---------------------------------------------------------------------

    @abstractmethod
    def scores(self, logits: np.ndarray, config=None) -> np.ndarray:
        """Logits -> probabilities (classification) or predictions in target units (regression)."""

    def targets_from_batches(self, label_ids: np.ndarray, label_range: Sequence[float] | None) -> np.ndarray:
        """Targets in their own units from what the loss saw (regression undoes the [0, 1] scaling)."""
        return np.asarray(label_ids)

    @abstractmethod
    def metrics(self, y_true, scores, labels: list[str], thresholds=0.5) -> MetricsResult:
        """The task's metrics (``metric_keys``) and per-label values from targets and scores."""

    def is_better(self, candidate: float | None, best: float | None) -> bool:
        """Whether ``candidate`` beats ``best`` on the main metric (None never wins)."""
        if candidate is None or best is None:
            return candidate is not None
        if self.greater_is_better:
            return candidate > best
        return candidate < best

    @abstractmethod
    def bootstrap_replicates(self, y_true, scores: np.ndarray, labels: list[str], point: MetricsResult,
                             counts: np.ndarray, thresholds) -> Replicates:
        """The task's metrics under each row of image ``counts`` (one resample a row); ``point`` is the
        metrics on the data itself."""

    def bootstrap_intervals(self, y_true, scores, labels: list[str], n_bootstrap: int = 1000, seed: int = 0,
                            thresholds: np.ndarray | float = 0.5) -> dict:
        """95 % percentile bootstrap intervals of the task's metrics and of each label's AUC.

        Returns ``{"metrics": {key: [low, high] | None}, "per_label": {label: [low, high] | None},
        "valid_resamples": {key: n}}`` (see :meth:`bootstrap_replicates` for the keys of each task).
        """
        if n_bootstrap < 1:
            raise UserError(f"--bootstrap {n_bootstrap} must be at least 1 (0 would give no intervals)")
        scores = np.asarray(scores, dtype=np.float64)
        point = self.metrics(y_true, scores, labels, thresholds)
        chunks = [
            self.bootstrap_replicates(y_true, scores, labels, point, counts, thresholds)
            for counts in resample_counts(len(y_true), n_bootstrap, seed)
        ]
        return percentile_intervals(chunks)

    # --- heads ----------------------------------------------------------------------------------

    @abstractmethod
    def indicator(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        """0/1 targets ``[N, outputs]`` (one-vs-rest for single_label)."""

    @abstractmethod
    def check_targets(self, y: np.ndarray, n_classes: int | None = None) -> tuple[np.ndarray, int]:
        """Validated head targets and the number of outputs; ``ValueError`` when they do not fit."""

    @abstractmethod
    def hard_predictions(self, scores: np.ndarray, thresholds=0.5) -> np.ndarray:
        """Class ids, a 0/1 matrix at ``thresholds``, or the values."""

    @abstractmethod
    def logreg_estimator(self, C: float, max_iter: int):
        """The scikit-learn linear head of this task (before standardisation; multi-output: of one label)."""

    # --- predictions and explanations -----------------------------------------------------------

    def prediction_columns(self, labels: Sequence[str]) -> list[str]:
        """CSV columns of ``vitune predict``."""
        return ["file", *labels, "predicted"]

    @abstractmethod
    def prediction_row(self, file: str, scores: np.ndarray, labels: Sequence[str], thresholds) -> dict:
        """One CSV row: the file, one probability per label and the decision."""

    def explained_outputs(self, scores: np.ndarray, thresholds) -> list[int]:
        """The outputs ``vitune explain`` explains by default for one image: the most probable output (the
        class; regression's one score). Multi-label explains every label at or above its threshold."""
        return [int(np.argmax(scores))]
