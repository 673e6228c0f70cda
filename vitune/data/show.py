"""``vitune data show``: the first rows, label frequencies per split and a labelled sample grid."""

from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitune.config import ShowConfig
from vitune.data.dataset_dir import SPLITS, DatasetInfo, load_dataset_dir
from vitune.data.metadata import metadata_groups
from vitune.storage.atomic import atomic_file
from vitune.tasks import get_task

GRID_SIDE = 4  # a 4x4 sample grid


@dataclass
class DatasetSummary:
    """What ``show`` prints and draws.

    ``rows``: the first rows as ``{"split", "file", "labels", "group"}`` with label names.
    ``frequencies``: per split, per label name, the number of images with it (regression:
    ``n``, ``mean``, ``min``, ``max`` of the target). ``metadata``: per metadata column (sex, age, view,
    ``--meta-columns``), per split, the number of images of each value (ages by bin). ``grid``: the sample grid PNG.
    """

    info: DatasetInfo
    rows: list[dict[str, Any]]
    frequencies: dict[str, dict[str, float]]
    metadata: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    grid: Path | None = None


def label_text(value: Any, info: DatasetInfo) -> str:
    """An encoded label as names: ``"a, c"`` (multi-label, ``"none"`` if empty), ``"cat"``, ``"3.5"``."""
    return get_task(info.task).label_text(value, info.labels)


def summarize(dataset_dir: Path | str, rows: int = 10) -> DatasetSummary:
    """Read the first ``rows`` rows and the label frequencies of every split (no pixels loaded)."""
    ds, info = load_dataset_dir(dataset_dir)
    first: list[dict[str, Any]] = []
    frequencies: dict[str, dict[str, float]] = {}
    for split in (name for name in SPLITS if name in ds):
        table = ds[split].select_columns(["file", "labels", "group"])
        for row in table.select(range(min(rows - len(first), len(table)))):
            first.append({"split": split, "file": row["file"], "labels": label_text(row["labels"], info),
                          "group": row["group"]})
        labels = np.asarray(table.with_format("numpy")["labels"])
        frequencies[split] = get_task(info.task).frequencies(labels, info.labels)
    metadata = {column: _value_counts(ds, column) for column in info.metadata_columns or ()}
    return DatasetSummary(info=info, rows=first, frequencies=frequencies, metadata=metadata)


def _value_counts(ds, column: str) -> dict[str, dict[str, int]]:
    """Per split, the images of each value of a metadata column (ages by their default bin)."""
    return {
        split: dict(sorted(Counter(metadata_groups(column, ds[split][column])).items()))
        for split in SPLITS
        if split in ds
    }


def write_sample_grid(dataset_dir: Path | str, out_png: Path | str, side: int = GRID_SIDE) -> Path:
    """Draw up to ``side x side`` images spread over the validation split (else the largest) with their labels."""
    from matplotlib.figure import Figure

    ds, info = load_dataset_dir(dataset_dir)
    split = "validation" if len(ds.get("validation", ())) >= side * side else max(ds, key=lambda name: len(ds[name]))
    data = ds[split]
    count = min(side * side, len(data))
    picks = np.unique(np.linspace(0, len(data) - 1, count).astype(np.int64)) if count else np.zeros(0, np.int64)
    columns = max(1, min(side, len(picks)))
    rows = max(1, -(-len(picks) // columns))
    figure = Figure(figsize=(2.2 * columns, 2.4 * rows + 0.4), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, row in zip(axes, data.select(picks.tolist())):
        pixels = np.asarray(row["pixel_values"], dtype=np.uint8)  # [1, S, S] for a grayscale DATASET_DIR
        ax.imshow(np.broadcast_to(pixels, (3, *pixels.shape[1:])).transpose(1, 2, 0))
        title = textwrap.shorten(label_text(row["labels"], info), width=56, placeholder=" ...")
        ax.set_title(textwrap.fill(title, width=30), fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    figure.suptitle(f"{Path(dataset_dir).name}: {split} samples ({info.task})")
    out_png = Path(out_png)
    with atomic_file(out_png) as handle:
        figure.savefig(handle, format="png", dpi=100)
    return out_png


def show(config: ShowConfig, console=None) -> DatasetSummary:
    """Print the first rows and label frequencies of a DATASET_DIR and write its sample grid."""
    from rich.console import Console

    summary = summarize(config.dataset_dir, config.rows)
    summary.grid = write_sample_grid(config.dataset_dir, config.out)
    console = console or Console()
    console.print(_rows_table(summary))
    console.print(_frequency_table(summary))
    for column, counts in summary.metadata.items():
        console.print(_metadata_table(column, counts))
    console.print(f"sample grid: {summary.grid}")
    return summary


def _rows_table(summary: DatasetSummary):
    from rich.table import Table

    info = summary.info
    table = Table(title=f"first {len(summary.rows)} rows ({info.task}, {len(info.labels)} labels, {info.image_size}px)")
    for column in ("split", "file", "labels", "group"):
        table.add_column(column)
    for row in summary.rows:
        table.add_row(row["split"], row["file"], row["labels"], row["group"] or "")
    return table


def _metadata_table(column: str, counts: dict[str, dict[str, int]]):
    from rich.table import Table

    table = Table(title=f"{column} (images per value)")
    table.add_column(column)
    for split in counts:
        table.add_column(split, justify="right")
    values = sorted({value for per_split in counts.values() for value in per_split})
    for value in values:
        table.add_row(value, *(str(per_split.get(value, 0)) for per_split in counts.values()))
    return table


def _frequency_table(summary: DatasetSummary):
    from rich.table import Table

    info = summary.info
    counted = get_task(info.task).is_classification
    table = Table(title="label frequencies" if counted else "target per split")
    table.add_column("label" if counted else "statistic")
    splits = list(summary.frequencies)
    for split in splits:
        size = info.splits.get(split, 0)
        table.add_column(f"{split} ({size})", justify="right")
    keys = list(summary.frequencies[splits[0]]) if splits else []
    for key in keys:
        cells = []
        for split in splits:
            value = summary.frequencies[split].get(key, 0)
            size = info.splits.get(split, 0)
            if counted:
                cells.append(f"{int(value)} ({value / size:.1%})" if size else "0")
            else:
                cells.append(f"{value:.4g}")
        table.add_row(key, *cells)
    return table
