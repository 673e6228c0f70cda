"""The report's "Where the model looks" section: per label the test images that matter most, explained.

For each label: the test images the run scores highest among those that have it (top positives)
and among those that do not (worst false positives), each with its overlay. Regression runs show
the highest predictions and the largest over-predictions. Only the first :data:`MAX_SCORED` test
images are scored, so the report stays quick on a large test split. The overlays are drawn on the
cached pixels at the model's size, scaled up sharp to at least 224 px
(:func:`vitune.explain.overlay.overlay`); the file, the score and the truth go in each caption.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from markupsafe import Markup

from vitune.data.dataset_dir import load_dataset_dir, require_split
from vitune.evaluation.templating import render
from vitune.explain.explainer import encode_png, explain_images, method_name
from vitune.models.run import Run, load_run

EXAMPLES = 2  # images per label and kind
MAX_SCORED = 2000
BATCH_SIZE = 32


def _ranked(order_by: np.ndarray, among: np.ndarray, count: int) -> list[int]:
    """Indices of ``among`` (a mask) with the highest ``order_by``, at most ``count``."""
    candidates = np.flatnonzero(among)
    return [int(i) for i in candidates[np.argsort(-order_by[candidates], kind="stable")][:count]]


def _picks(run: Run, y_true: np.ndarray, scores: np.ndarray) -> dict[str, dict[str, list[int]]]:
    """Per label ``{"top positives": [...], "worst false positives": [...]}`` (regression: its own two kinds)."""
    if not run.task.is_classification:
        predicted = scores.reshape(-1)
        return {run.labels[0]: {
            "highest predictions": _ranked(predicted, np.ones(len(predicted), bool), EXAMPLES),
            "largest over-predictions": _ranked(predicted - y_true.reshape(-1), np.ones(len(predicted), bool),
                                                EXAMPLES)}}
    targets = run.task.indicator(y_true, scores.shape[1])
    return {label: {"top positives": _ranked(scores[:, k], targets[:, k] == 1, EXAMPLES),
                    "worst false positives": _ranked(scores[:, k], targets[:, k] == 0, EXAMPLES)}
            for k, label in enumerate(run.labels)}


def _figures(run: Run, split, label: str, rows: list[int], y_true: np.ndarray) -> list[dict]:
    """The overlays of ``label`` on test rows ``rows``: ``{"png", "file", "score", "truth"}`` each."""
    if not rows:
        return []
    pixels = np.asarray(split.select(rows).with_format("numpy")["pixel_values"], dtype=np.uint8)
    results = explain_images(run, [image.transpose(1, 2, 0) for image in pixels], labels=[label],
                             batch_size=BATCH_SIZE)
    files = split.select(rows)["file"]
    truth = [run.task.label_text(y_true[row], run.labels) for row in rows]
    return [{"png": encode_png(result.overlay(label)), "file": name, "score": result.labels[label].score,
             "truth": text}
            for result, name, text in zip(results, files, truth)]


def where_the_model_looks(run_dir: Path | str) -> Markup:
    """The section's HTML (``explanations.html.j2``)."""
    from vitune.evaluation.evaluate import split_scores

    run = load_run(run_dir)
    dataset_dir = run.dir.dataset_dir()
    ds, info = load_dataset_dir(dataset_dir)
    run.check_dataset(info, dataset_dir)
    test = require_split(ds, "test", dataset_dir)
    test = test.select(range(min(len(test), MAX_SCORED)))
    y_true, scores = split_scores(run, test, BATCH_SIZE)
    shown = {}
    for label, kinds in _picks(run, y_true, scores).items():
        shown[label] = {kind: _figures(run, test, label, rows, y_true) for kind, rows in kinds.items()}
    return render("explanations.html.j2", scored=len(test), method=method_name(run), labels=shown)
