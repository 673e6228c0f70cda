"""``vitune predict``: a run's predictions for image files and folders, as a CSV or a table.

Images are decoded exactly as ``vitune data prepare`` caches them (:func:`decode_image` at the
model's size) and normalised with the saved processor's mean/std, so predictions match what
evaluation saw. Folders are searched recursively (sorted, dot files ignored). A file that cannot
be used (unreadable, empty, truncated, not an image) is reported with its reason and skipped; the
run fails only when no image at all could be predicted.

Multi-label decisions use ``RUN_DIR/thresholds.json`` (tuned on validation by ``vitune
evaluate``) when present, else 0.5; single-label takes the most probable class; regression gives
the value in the target's units.
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from vitune.config import MODEL_HEAD, PredictConfig
from vitune.data.images import BadImage, decode_image
from vitune.data.sources.base import Skipped
from vitune.data.sources.files import is_hidden, is_image_name
from vitune.errors import UserError
from vitune.layout import RunDir
from vitune.progress import progress
from vitune.run_dir import load_run
from vitune.tasks import Task, get_task

log = logging.getLogger(__name__)



@dataclass
class Predictions:
    """What ``predict`` returns: one row per predicted image plus the files it skipped.

    A row is ``{"file", <label>: probability, ..., "predicted"}`` (single-label also
    ``"probability"`` of the predicted class; regression only ``"file", "predicted"``).
    """

    task: str
    labels: list[str]
    head: str
    columns: list[str]
    rows: list[dict]
    skipped: list[Skipped] = field(default_factory=list)
    thresholds: list[float] | None = None
    out: Path | None = None


def expand_inputs(inputs: Iterable[Path | str]) -> tuple[list[Path], list[Skipped]]:
    """Files to predict, in order: given files as they are, folders' image files recursively (sorted).

    Files inside folders without an image suffix are returned as skipped; a missing path is an error.
    """
    files: list[Path] = []
    skipped: list[Skipped] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            for found in _walk(path):
                if is_image_name(found.name):
                    files.append(found)
                else:
                    skipped.append(Skipped(str(found), f"not an image file ({found.suffix or 'no suffix'})"))
        else:
            raise UserError(f"{path} does not exist: give image files or folders of images")
    return files, skipped


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        for name in sorted(names):
            if not is_hidden(name):
                yield Path(root) / name


def decoded_batches(
    files: list[Path], image_size: int, batch_size: int, done: list[Path], skipped: list[Skipped]
) -> Iterator[np.ndarray]:
    """uint8 ``[B, 3, S, S]`` batches of the files that decode; appends to ``done`` / ``skipped`` as it goes."""
    starts = range(0, len(files), batch_size)
    for start in progress(starts, total=len(starts), desc="predicting", unit="batch"):
        arrays = []
        for path in files[start : start + batch_size]:
            try:
                arrays.append(decode_image(path, image_size))
                done.append(path)
            except BadImage as exc:
                skipped.append(Skipped(str(path), exc.reason))
            except OSError as exc:
                skipped.append(Skipped(str(path), f"unreadable file: {exc.strerror or exc}"))
        if arrays:
            yield np.stack(arrays)


@dataclass
class Scorer:
    """How one head turns pixel batches into scores, with the run's task, labels and image size."""

    task: Task
    labels: list[str]
    image_size: int
    scores: Callable[[Iterable[np.ndarray]], np.ndarray]
    thresholds: np.ndarray | None


def make_scorer(run_dir: Path | str, head: str = MODEL_HEAD, heads_dir: Path | str | None = None,
                device: str | None = None) -> Scorer:
    """The fine-tuned model (``head="model"``) or a saved frozen-backbone head of the run."""
    run = load_run(run_dir, device)
    if head == MODEL_HEAD:
        return Scorer(run.task, run.labels, run.prep.image_size, run.scores, run.thresholds())
    from vitune.heads import predict_with_heads, read_heads_config

    heads_dir = Path(heads_dir) if heads_dir is not None else RunDir(run_dir).heads
    config = read_heads_config(heads_dir)
    if head not in config["heads"]:
        raise UserError(f"no {head!r} head in {heads_dir}: it has {', '.join(config['heads'])}")
    task = get_task(config["task"])
    if task.tunes_thresholds:
        log.info("head %s: multi-label decisions at 0.5 (tuned thresholds belong to the model)", head)

    def scores(batches: Iterable[np.ndarray]) -> np.ndarray:
        return predict_with_heads(heads_dir, batches, head, model=run)  # embedded on the run's --device

    return Scorer(task, list(config["labels"]), run.prep.image_size, scores, None)


def _rows(scorer: Scorer, files: list[Path], scores: np.ndarray) -> list[dict]:
    thresholds = scorer.thresholds if scorer.thresholds is not None else np.full(len(scorer.labels), 0.5)
    return [scorer.task.prediction_row(str(path), row, scorer.labels, thresholds) for path, row in zip(files, scores)]


def write_csv(predictions: Predictions, out: Path | str) -> Path:
    """Write the rows to ``out`` (columns: file, one probability per label, predicted)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=predictions.columns)
        writer.writeheader()
        writer.writerows(predictions.rows)
    return out


def format_table(predictions: Predictions) -> str:
    """The rows as an aligned plain-text table (probabilities to 4 decimals)."""
    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = [predictions.columns] + [[cell(row[c]) for c in predictions.columns] for row in predictions.rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(predictions.columns))]
    return "\n".join("  ".join(text.ljust(w) for text, w in zip(line, widths)).rstrip() for line in lines)


def predict(config: PredictConfig) -> Predictions:
    """Predict every image in ``config.inputs`` (files or folders) with the run's model or one of its heads.

    Writes a CSV to ``config.out`` when given. Unusable files land in ``skipped`` with their reason;
    a :class:`UserError` is raised when a path does not exist or no image could be predicted.
    """
    files, skipped = expand_inputs(config.inputs)
    scorer = make_scorer(config.run, config.head, config.heads_dir, config.device)
    done: list[Path] = []
    batches = decoded_batches(files, scorer.image_size, config.batch_size, done, skipped)
    first = next(batches, None)
    if first is None:
        reasons = "; ".join(f"{Path(s.file).name}: {s.reason}" for s in skipped[:3])
        raise UserError(f"no image to predict{f' ({reasons})' if reasons else ''}: give readable image files")
    scores = scorer.scores(itertools.chain([first], batches))
    predictions = Predictions(
        task=scorer.task.name,
        labels=scorer.labels,
        head=config.head,
        columns=scorer.task.prediction_columns(scorer.labels),
        rows=_rows(scorer, done, scores),
        skipped=skipped,
        thresholds=None if scorer.thresholds is None else [float(t) for t in scorer.thresholds],
    )
    if config.out is not None:
        predictions.out = write_csv(predictions, config.out)
    return predictions
