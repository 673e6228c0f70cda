"""``vitune predict``: a run's predictions for image files and folders, as a CSV or a table.

Images are decoded exactly as ``vitune data prepare`` caches them (:func:`decode_image` at the
model's size) and normalised with the saved processor's mean/std, so predictions match what
evaluation saw. Folders are searched recursively (sorted, dot files ignored). A file that cannot
be used (unreadable, empty, truncated, not an image) is reported with its reason and skipped; the
run fails only when no image at all could be predicted.

Multi-label decisions use ``RUN_DIR/thresholds.json`` (tuned on validation by ``vitune
evaluate``) when present, else 0.5; single-label takes the most probable class; regression gives
the value in the target's units.

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
from vitune.models.run import load_run
from vitune.storage.atomic import atomic_file
from vitune.storage.layout import RunDir
from vitune.tasks import Task, get_task

if TYPE_CHECKING:
    from vitune.explain import ExplainResult

log = logging.getLogger(__name__)

TTA_COLUMN = "tta"  # the CSV column naming the --tta views, present only with flip or crops


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

    @property
    def rows(self) -> list[dict]:
        """One CSV row per predicted image."""
        return _rows(get_task(self.task), self.labels, self.files, self.scores, self.thresholds, self.tta)


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


def make_scorer(run_dir: Path | str, head: str = MODEL_HEAD, heads_dir: Path | str | None = None,
                device: str | None = None, backend: str = TORCH, tta: str = NO_TTA) -> Scorer:
    """The fine-tuned model (``head="model"``) or a saved frozen-backbone head of the run.

    ``backend`` (torch, onnx, onnx-int8) computes the model's logits; the scores are taken from
    them the same way on each. ``tta`` (none, flip, crops) averages each image's calibrated scores
    over its views, made on the device that scores them (:mod:`vitune.inference.tta`). A cross-validation
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

        return Scorer(run.task, run.labels, run.prep.image_size, augmentation.wrap(scores), run.thresholds(), tta)
    if backend != TORCH:
        raise UserError(f"--backend {backend} scores with the fine-tuned model; the {head} head embeds with torch: "
                        "drop --head or use --backend torch")
    from vitune.heads import heads_scorer, read_heads_config

    heads_dir = Path(heads_dir) if heads_dir is not None else RunDir(run_dir).heads
    config = read_heads_config(heads_dir)
    task = get_task(config["task"])
    if task.tunes_thresholds:
        log.info("head %s: multi-label decisions at 0.5 (tuned thresholds belong to the model)", head)
    score = heads_scorer(heads_dir, head, model=run)  # embedded on the run's --device
    return Scorer(task, list(config["labels"]), run.prep.image_size, augmentation.wrap(score), None, tta)


def _rows(task: Task, labels: list[str], files: list[str], scores: np.ndarray, thresholds,
          tta: str = NO_TTA) -> list[dict]:
    """One row per file; under ``--tta flip|crops`` each row also names the views (a ``tta`` column)."""
    cutoffs = thresholds if thresholds is not None else np.full(len(labels), 0.5)
    rows = [task.prediction_row(file, row, labels, cutoffs) for file, row in zip(files, scores)]
    if tta != NO_TTA:
        for row in rows:
            row[TTA_COLUMN] = tta
    return rows


def prediction_columns(task: Task, labels: list[str], tta: str = NO_TTA) -> list[str]:
    """The CSV columns: the task's, then ``tta`` when the scores are averaged over views."""
    columns = task.prediction_columns(labels)
    return columns if tta == NO_TTA else [*columns, TTA_COLUMN]


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
    columns = prediction_columns(scorer.task, scorer.labels, scorer.tta)
    thresholds = None if scorer.thresholds is None else [float(t) for t in scorer.thresholds]
    names: list[str] = []
    scores: list[np.ndarray] = []
    with _csv_file(config.out) as handle:  # an error or Ctrl-C leaves an earlier file at that path as it was
        writer = None if handle is None else csv.DictWriter(handle, fieldnames=columns)
        if writer is not None:
            writer.writeheader()
        for batch_files, pixels in decoded_batches(files, scorer.image_size, config.batch_size, skipped):
            batch_scores = scorer.scores(pixels)
            if writer is not None:
                writer.writerows(_rows(scorer.task, scorer.labels, batch_files, batch_scores, thresholds, scorer.tta))
            names += batch_files
            scores.append(batch_scores)
        if not names:
            reasons = "; ".join(f"{Path(s.file).name}: {s.reason}" for s in skipped[:3])
            raise UserError(f"no image to predict{f' ({reasons})' if reasons else ''}: give readable image files")
    result = Predictions(task=scorer.task.name, labels=scorer.labels, head=config.head, columns=columns, files=names,
                         scores=np.concatenate(scores), skipped=skipped, thresholds=thresholds,
                         out=None if config.out is None else Path(config.out), tta=config.tta)
    if config.explain is not None:
        from vitune.explain import write_explanations

        result.explanations = write_explanations(load_run(config.run, config.device), names, config.explain,
                                                 batch_size=config.batch_size, total=len(names))
    return result
