"""Example images for the page: a visitor with no X-ray at hand clicks one and sees the model at work.

Up to :data:`MAX_EXAMPLES` images of the run's validation split (from its DATASET_DIR, at the
cached size), picked to show different labels: the first positive of each label in turn (each class
in turn for single-label), again round the labels until there are enough; for regression, images
spread evenly over the range of the target. A run whose dataset is not on this machine has no
examples, and the page says nothing of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vitune.data.dataset_dir import load_dataset_dir
from vitune.errors import UserError
from vitune.storage.layout import RunDir
from vitune.tasks import get_task

log = logging.getLogger(__name__)

MAX_EXAMPLES = 6
EXAMPLE_SPLIT = "validation"


@dataclass
class Example:
    """One example image written for the page: its PNG file and what it shows (``"positive for Effusion"``)."""

    path: Path
    caption: str


def pick_rows(indicator: np.ndarray, limit: int = MAX_EXAMPLES) -> list[tuple[int, int]]:
    """``(row, label index)`` pairs from 0/1 targets ``[N, labels]``: labels in turn, each time its first positive
    row not yet picked, round after round until ``limit`` pairs or no positive is left."""
    picked: list[tuple[int, int]] = []
    used: set[int] = set()
    positives = [list(np.flatnonzero(indicator[:, label] == 1)) for label in range(indicator.shape[1])]
    while len(picked) < limit and any(positives):
        for label, rows in enumerate(positives):
            while rows and rows[0] in used:
                rows.pop(0)
            if rows and len(picked) < limit:
                row = int(rows.pop(0))
                used.add(row)
                picked.append((row, label))
    return picked


def spread_rows(values: np.ndarray, limit: int = MAX_EXAMPLES) -> list[int]:
    """Rows whose ``values`` spread evenly from the lowest to the highest (regression), at most ``limit``."""
    order = np.argsort(values, kind="stable")
    positions = np.unique(np.linspace(0, len(order) - 1, num=min(limit, len(order))).round().astype(int))
    return [int(order[position]) for position in positions]


def write_examples(run_dir: Path | str, folder: Path) -> list[Example]:
    """Write the example PNGs of the run's validation split into ``folder``; none when its dataset is unavailable."""
    try:
        dataset, info = load_dataset_dir(RunDir(run_dir).dataset_dir())
    except UserError as exc:
        log.info("no example images on the page: %s", exc)
        return []
    if EXAMPLE_SPLIT not in dataset or len(dataset[EXAMPLE_SPLIT]) == 0:
        return []
    split = dataset[EXAMPLE_SPLIT]
    task = get_task(info.task)
    targets = np.asarray(split["labels"], dtype=np.float64)
    if task.is_classification:
        chosen = [(row, f"positive for {info.labels[label]}")
                  for row, label in pick_rows(task.indicator(targets, len(info.labels)))]
    else:
        chosen = [(row, f"{info.labels[0]} = {targets.reshape(-1)[row]:.3g}") for row in spread_rows(targets.reshape(-1))]
    examples = []
    for number, (row, caption) in enumerate(chosen, start=1):
        pixels = np.asarray(split[row]["pixel_values"], dtype=np.uint8)
        image = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
        path = folder / f"example-{number}.png"
        image.save(path)
        examples.append(Example(path, f"{caption} ({split[row]['file']})"))
    return examples
