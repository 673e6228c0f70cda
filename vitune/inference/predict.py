"""``vitune predict``: a run's predictions for image files and folders, as a CSV or a table.

Images are decoded exactly as ``vitune data prepare`` caches them (:func:`decode_image` at the
model's size) and normalised with the saved processor's mean/std, so predictions match what
evaluation saw. Folders are searched recursively (sorted, dot files ignored). A file that cannot
be used (unreadable, empty, truncated, not an image) is reported with its reason and skipped; the
run fails only when no image at all could be predicted.

Multi-label decisions use ``RUN_DIR/thresholds.json`` (tuned on validation by ``vitune
evaluate``) when present, else 0.5; single-label takes the most probable class; regression gives
the value in the target's units.

Images unlike the training data are flagged where the run (or its heads) stored out-of-distribution
statistics (:mod:`vitune.models.ood`): the CSV gains ``ood_distance`` (the Mahalanobis distance of
the image's embedding to the training images') and ``ood`` (``True`` over the threshold set on
validation), computed from the same forward pass as the scores. A run without them says so once and
writes neither column.

It streams: each batch is decoded, scored and its CSV rows written before the next is read, and
the result keeps only the file names and a score matrix, so memory stays flat however many
images a folder holds (``bench/predict_memory.py``).
"""

from __future__ import annotations

import csv
import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ContextManager, TextIO

import numpy as np

from vitune.config import MODEL_HEAD, PredictConfig
from vitune.data.inputs import decoded_batches, expand_inputs
from vitune.data.sources.base import Skipped
from vitune.errors import UserError
from vitune.inference.backend import TORCH, backend_device, open_backend
from vitune.inference.tta import NO_TTA, TestTimeAugmentation
from vitune.models.folds import FoldEnsemble, load_scoring_run
from vitune.models.onnx import use_backend
from vitune.models.ood import OodStatistics
from vitune.models.run import load_run
from vitune.storage.atomic import atomic_file
from vitune.storage.layout import HeadsDir, RunDir
from vitune.tasks import Task, get_task

if TYPE_CHECKING:
    from vitune.explain import ExplainResult

log = logging.getLogger(__name__)

TTA_COLUMN = "tta"  # the CSV column naming the --tta views, present only with flip or crops
OOD_DISTANCE_COLUMN = "ood_distance"
OOD_COLUMN = "ood"
OOD_COLUMNS = [OOD_DISTANCE_COLUMN, OOD_COLUMN]


@dataclass
class Predictions:
    """What ``predict`` returns: the predicted files with their scores, plus the files it skipped.

    ``rows`` gives one dict per image, ``{"file", <label>: probability, ..., "predicted"}``
    (single-label also ``"probability"`` of the predicted class; regression only ``"file",
    "predicted"``); ``scores`` is the ``[N, K]`` (regression ``[N]``) matrix behind them.
    """

    task: str
    labels: list[str]
    head: str
    columns: list[str]
    files: list[str]
    scores: np.ndarray
    skipped: list[Skipped] = field(default_factory=list)
    thresholds: list[float] | None = None
    out: Path | None = None
    explanations: ExplainResult | None = None  # with ``--explain``
    tta: str = NO_TTA  # the ``--tta`` views the scores are averaged over
    ood_distances: np.ndarray | None = None  # ``[N]``, where the run has out-of-distribution statistics
    ood_threshold: float | None = None

    @property
    def rows(self) -> list[dict]:
        """One CSV row per predicted image (with ``ood_distance`` and ``ood`` where the run flags them)."""
        scored = ScoredBatch(self.scores, self.ood_distances, self.ood_threshold)
        return _rows(get_task(self.task), self.labels, self.files, scored, self.thresholds, self.tta)


@dataclass
class ScoredRow:
    """One image's scores and, where the run has the statistics, its out-of-distribution distance and flag."""

    scores: np.ndarray
    ood_distance: float | None = None
    ood: bool | None = None


@dataclass
class ScoredBatch:
    """A batch's scores ``[B, K]`` (regression ``[B]``) and its distances ``[B]`` (None without statistics)."""

    scores: np.ndarray
    ood_distances: np.ndarray | None = None
    ood_threshold: float | None = None

    def rows(self) -> list[ScoredRow]:
        """The batch one image at a time."""
        if self.ood_distances is None:
            return [ScoredRow(row) for row in self.scores]
        return [ScoredRow(row, float(distance), bool(distance > self.ood_threshold))
                for row, distance in zip(self.scores, self.ood_distances)]


@dataclass
class OodCheck:
    """What flags inputs unlike the training data: the stored statistics and a forward pass giving the
    scores and the embedding they are measured on, together."""

    statistics: OodStatistics
    scores_and_features: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class Scorer:
    """How one head turns a pixel batch into scores, with the run's task, labels and image size.

    ``tta`` names the test-time augmentation ``scores`` averages over (``none``: the image alone).
    """

    task: Task
    labels: list[str]
    image_size: int
    scores: Callable[[np.ndarray], np.ndarray]
    thresholds: np.ndarray | None
    tta: str = NO_TTA
    ood: OodCheck | None = None

    def score_batch(self, pixels: np.ndarray) -> ScoredBatch:
        """The scores of a uint8 batch and, with an :class:`OodCheck`, the distances, from one forward pass."""
        if self.ood is None:
            return ScoredBatch(self.scores(pixels))
        scores, features = self.ood.scores_and_features(pixels)
        statistics = self.ood.statistics
        return ScoredBatch(scores, statistics.distances(features), statistics.threshold)

    @property
    def columns(self) -> list[str]:
        """The CSV columns of ``vitune predict``: the task's, then ``tta`` when the scores are averaged over
        views, then ``ood_distance`` and ``ood`` when flagged."""
        columns = self.task.prediction_columns(self.labels)
        if self.tta != NO_TTA:
            columns.append(TTA_COLUMN)
        return columns + (OOD_COLUMNS if self.ood is not None else [])


def make_scorer(run_dir: Path | str, head: str = MODEL_HEAD, heads_dir: Path | str | None = None,
                device: str | None = None, backend: str = TORCH, tta: str = NO_TTA) -> Scorer:
    """The fine-tuned model (``head="model"``) or a saved frozen-backbone head of the run.

    ``backend`` (torch, onnx, onnx-int8) computes the model's logits, or a head's embeddings (the encoder
    exported beside the run); the scores are taken from them the same way on each. ``tta`` (none, flip,
    crops) averages each image's calibrated scores over its views, made on the device that scores them
    (:mod:`vitune.inference.tta`); the out-of-distribution distance is the original view's. A cross-validation
    parent (``cv.json``) scores with its folds' ensemble.
    """
    run = load_scoring_run(run_dir, backend_device(backend, device))
    if isinstance(run, FoldEnsemble) and head != MODEL_HEAD:
        raise UserError(f"{run_dir} is a cross-validation: its folds' ensemble has no {head} head; drop --head, "
                        f"or score one fold's heads (vitune predict {RunDir(run_dir).fold(0)} ... --head {head})")
    augmentation = TestTimeAugmentation(tta, run.device)
    if head == MODEL_HEAD:
        logits = open_backend(run, backend)

        def scores(pixels: np.ndarray) -> np.ndarray:
            return run.logits_to_scores(logits.logits(pixels))

        def scores_and_features(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            batch_logits, features = logits.logits_and_features(pixels)
            return run.logits_to_scores(batch_logits), features

        statistics = OodStatistics.load(run.dir.ood)
        ood = None if statistics is None else OodCheck(statistics, augmentation.wrap_with_features(scores_and_features))
        return Scorer(run.task, run.labels, run.prep.image_size, augmentation.wrap(scores), run.thresholds(), tta, ood)
    from vitune.heads import heads_forward, read_heads_config

    heads_dir = Path(heads_dir) if heads_dir is not None else RunDir(run_dir).heads
    config = read_heads_config(heads_dir)
    use_backend(run, config["pooling"], backend, run.dir.encoder_export(config["pooling"]))
    task = get_task(config["task"])
    if task.tunes_thresholds:
        log.info("head %s: multi-label decisions at 0.5 (tuned thresholds belong to the model)", head)
    forward = heads_forward(heads_dir, head, model=run)  # embedded on the run's --device

    def score(pixels: np.ndarray) -> np.ndarray:
        return forward(pixels)[0]

    statistics = OodStatistics.load(HeadsDir(heads_dir).ood)
    ood = None if statistics is None else OodCheck(statistics, augmentation.wrap_with_features(forward))
    return Scorer(task, list(config["labels"]), run.prep.image_size, augmentation.wrap(score), None, tta, ood)


def _rows(task: Task, labels: list[str], files: list[str], scored: ScoredBatch, thresholds,
          tta: str = NO_TTA) -> list[dict]:
    """One row per file; under ``--tta flip|crops`` each row also names the views (a ``tta`` column), and where
    the run flags inputs unlike its training data, the distance and the flag."""
    cutoffs = thresholds if thresholds is not None else np.full(len(labels), 0.5)
    rows = []
    for file, row in zip(files, scored.rows()):
        values = task.prediction_row(file, row.scores, labels, cutoffs)
        if tta != NO_TTA:
            values[TTA_COLUMN] = tta
        if row.ood_distance is not None:
            values[OOD_DISTANCE_COLUMN], values[OOD_COLUMN] = row.ood_distance, row.ood
        rows.append(values)
    return rows


def _csv_file(path: Path | str | None) -> ContextManager[TextIO | None]:
    """Where the predictions CSV goes: a temporary file renamed to ``path`` once every row is in (None: nowhere)."""
    return nullcontext() if path is None else atomic_file(path, "w", newline="")


def format_table(predictions: Predictions) -> str:
    """The rows as an aligned plain-text table (probabilities to 4 decimals)."""
    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = [predictions.columns] + [[cell(row[c]) for c in predictions.columns] for row in predictions.rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(predictions.columns))]
    return "\n".join("  ".join(text.ljust(w) for text, w in zip(line, widths)).rstrip() for line in lines)


def predict(config: PredictConfig) -> Predictions:
    """Predict every image in ``config.inputs`` (files or folders) with the run's model or one of its heads.

    Writes a CSV to ``config.out`` as it goes when given. Unusable files land in ``skipped`` with
    their reason; a :class:`UserError` is raised when a path does not exist or no image could be
    predicted.
    """
    files, skipped = expand_inputs(config.inputs)
    if config.explain is not None:
        RunDir(config.run).require()  # one model to explain, said before the scoring: a cross-validation's are its folds
    scorer = make_scorer(config.run, config.head, config.heads_dir, config.device, config.backend, config.tta)
    if scorer.ood is None:
        log.warning("%s has no out-of-distribution statistics for its %s scores (`vitune train` and `vitune heads` "
                    "fit them since 0.3): no ood column", config.run, config.head)
    columns = scorer.columns
    thresholds = None if scorer.thresholds is None else [float(t) for t in scorer.thresholds]
    names: list[str] = []
    scores: list[np.ndarray] = []
    distances: list[np.ndarray] = []
    with _csv_file(config.out) as handle:  # an error or Ctrl-C leaves an earlier file at that path as it was
        writer = None if handle is None else csv.DictWriter(handle, fieldnames=columns)
        if writer is not None:
            writer.writeheader()
        for batch_files, pixels in decoded_batches(files, scorer.image_size, config.batch_size, skipped):
            scored = scorer.score_batch(pixels)
            if writer is not None:
                writer.writerows(_rows(scorer.task, scorer.labels, batch_files, scored, thresholds, scorer.tta))
            names += batch_files
            scores.append(scored.scores)
            if scored.ood_distances is not None:
                distances.append(scored.ood_distances)
        if not names:
            reasons = "; ".join(f"{Path(s.file).name}: {s.reason}" for s in skipped[:3])
            raise UserError(f"no image to predict{f' ({reasons})' if reasons else ''}: give readable image files")
    result = Predictions(task=scorer.task.name, labels=scorer.labels, head=config.head, columns=columns, files=names,
                         scores=np.concatenate(scores), skipped=skipped, thresholds=thresholds,
                         out=None if config.out is None else Path(config.out), tta=config.tta,
                         ood_distances=np.concatenate(distances) if distances else None,
                         ood_threshold=None if scorer.ood is None else scorer.ood.statistics.threshold)
    if config.explain is not None:
        from vitune.explain import write_explanations

        result.explanations = write_explanations(load_run(config.run, config.device), names, config.explain,
                                                 batch_size=config.batch_size, total=len(names))
    return result
