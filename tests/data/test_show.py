"""``show``: first rows with label names, per-split label frequencies, a sample grid PNG."""

from __future__ import annotations

import io

import datasets
import numpy as np
from PIL import Image
from rich.console import Console

from vitune.config import ShowConfig
from vitune.data.show import show, summarize


def test_show_multi_label_rows_frequencies_and_grid(dataset_dir_factory, tmp_path):
    path = dataset_dir_factory(task="multi_label", sizes={"train": 20, "validation": 8})
    buffer = io.StringIO()
    summary = show(ShowConfig(path, out=tmp_path / "grid.png", rows=3), console=Console(file=buffer, width=200))

    train = datasets.load_from_disk(str(path))["train"]
    first = train[0]
    expected_names = ", ".join(n for n, v in zip(["a", "b", "c"], first["labels"]) if v) or "none"
    assert summary.rows[0] == {"split": "train", "file": first["file"], "labels": expected_names, "group": first["group"]}
    assert len(summary.rows) == 3
    labels = np.asarray(train["labels"])
    assert summary.frequencies["train"] == {name: int(labels[:, j].sum()) for j, name in enumerate("abc")}
    assert set(summary.frequencies) == {"train", "validation"}
    text = buffer.getvalue()
    assert first["file"] in text and "label frequencies" in text and "validation (8)" in text
    with Image.open(summary.grid) as grid:
        assert grid.size[0] > 400 and grid.size[1] > 400


def test_summarize_single_label_and_regression(dataset_dir_factory):
    single = summarize(dataset_dir_factory(task="single_label", sizes={"train": 9, "validation": 3}), rows=12)
    assert [row["split"] for row in single.rows] == ["train"] * 9 + ["validation"] * 3
    assert single.rows[1]["labels"] == "b"  # the fixture cycles classes a, b, c
    assert single.frequencies["train"] == {"a": 3, "b": 3, "c": 3}

    path = dataset_dir_factory(task="regression", sizes={"train": 10, "validation": 4})
    regression = summarize(path, rows=2)
    values = np.asarray(datasets.load_from_disk(str(path))["validation"]["labels"])
    assert regression.frequencies["validation"]["n"] == 4
    assert np.isclose(regression.frequencies["validation"]["max"], values.max())
    assert regression.rows[0]["labels"] == f"{float(datasets.load_from_disk(str(path))['train'][0]['labels']):.4g}"


def test_show_writes_default_grid_into_dataset_dir(dataset_dir_factory):
    path = dataset_dir_factory(task="single_label", sizes={"train": 5, "validation": 2})
    summary = show(ShowConfig(path), console=Console(file=io.StringIO()))
    assert summary.grid == path / "samples.png" and summary.grid.is_file()
