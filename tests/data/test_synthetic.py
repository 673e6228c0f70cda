"""Built-in data: the ChestX-ray14-like release and the digits imagefolder, read back by the readers."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from vitune.data.sources import detect_format, read_source
from vitune.data.sources.chestxray14 import FINDINGS
from vitune.data.synthetic import make_chestxray_like, make_digits_imagefolder
from vitune.tasks.label_space import infer_label_space


def test_chestxray_like_release_layout(tmp_path):
    root = make_chestxray_like(tmp_path / "cx", n_patients=40, seed=3, image_size=48)
    with open(root / "Data_Entry_2017_v2020.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == [
        "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
        "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]",
    ]
    first = table[0]
    assert first["Image Index"] == "00000001_000.png" and first["Follow-up #"] == "0" and first["Patient ID"] == "1"
    with Image.open(root / "images" / first["Image Index"]) as image:
        assert (image.mode, image.size) == ("L", (48, 48))
    assert len(list((root / "images").iterdir())) == len(table)
    patients = {row["Image Index"]: row["Patient ID"] for row in table}
    assert max(int(row["Follow-up #"]) for row in table) >= 2
    train = (root / "train_val_list.txt").read_text().split()
    test = (root / "test_list.txt").read_text().split()
    assert sorted(train + test) == sorted(patients)
    assert not {patients[n] for n in train} & {patients[n] for n in test}  # split by patient

    rows = read_source(str(root))
    assert detect_format(str(root)) == "chestxray14" and rows.official_split and not rows.skipped
    space = infer_label_space([record.raw_label for record in rows.records], task=rows.task, label_order=rows.label_order)
    labels = np.array([space.encode(r.raw_label) for r in rows.records])
    assert space.labels == list(FINDINGS)
    assert 0.4 <= (labels.sum(axis=1) == 0).mean() <= 0.7  # "No Finding" share
    assert (labels.sum(axis=1) >= 2).any()  # several findings per image happen


def test_chestxray_like_is_deterministic_and_findings_are_visible(tmp_path):
    a = make_chestxray_like(tmp_path / "a", n_patients=6, seed=1, image_size=64)
    b = make_chestxray_like(tmp_path / "b", n_patients=6, seed=1, image_size=64)
    c = make_chestxray_like(tmp_path / "c", n_patients=6, seed=2, image_size=64)
    entries = "Data_Entry_2017_v2020.csv"
    assert (a / entries).read_text() == (b / entries).read_text() != (c / entries).read_text()
    assert (a / "images" / "00000001_000.png").read_bytes() == (b / "images" / "00000001_000.png").read_bytes()
    # every finding brightens its own grid cell: compare the cell with and without the finding
    rows = read_source(str(make_chestxray_like(tmp_path / "d", n_patients=120, seed=0, image_size=64)))
    images = np.stack([np.asarray(Image.open(tmp_path / "d" / r.file), np.float64) for r in rows.records])
    for k, finding in enumerate(FINDINGS):
        r, c = divmod(k, 4)
        cell = images[:, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16].mean(axis=(1, 2))
        has = np.array([finding in rec.raw_label for rec in rows.records])
        assert has.sum() >= 3, finding
        assert cell[has].mean() > cell[~has].mean() + 15, finding


def test_digits_imagefolder(tmp_path):
    from sklearn.datasets import load_digits

    root = make_digits_imagefolder(tmp_path / "digits", image_size=16)
    rows = read_source(str(root))
    assert rows.format == "imagefolder" and len(rows.records) == 1797 and not rows.skipped
    space = infer_label_space([record.raw_label for record in rows.records])
    assert (space.task, space.labels) == ("single_label", [str(d) for d in range(10)])
    digits = load_digits()
    first = rows.records[0]
    index = int(first.file.split("/")[1].removesuffix(".png"))
    assert first.raw_label == str(digits.target[index])
    pixels = np.asarray(Image.open(root / first.file))
    assert pixels.shape == (16, 16)
    assert np.array_equal(pixels[::2, ::2], np.round(digits.images[index] / 16 * 255).astype(np.uint8))


def test_lesion_boxes_hold_the_lesions(tmp_path):
    from vitune.data.synthetic import BOXES_FILE, lesion_images

    gray, labels, boxes = lesion_images(30, ["Atelectasis", "Edema"], image_size=64, rate=0.5, seed=0)
    assert gray.shape == (30, 64, 64) and labels.shape == (30, 2)
    assert [sorted(b) for b in boxes] == [sorted(n for n, on in zip(["Atelectasis", "Edema"], row) if on)
                                          for row in labels]
    for pixels, image_boxes in zip(gray.astype(np.float64), boxes):
        for x0, y0, x1, y1 in image_boxes.values():
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            cx, cy, third = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 6
            middle = pixels[int(cy - third):int(cy + third) + 1, int(cx - third):int(cx + third) + 1]
            assert middle.mean() > pixels.mean() + 40  # the bright blob sits in the middle of its box
    root = make_chestxray_like(tmp_path / "cx", n_patients=8, seed=1, image_size=64, boxes=True)
    written = json.loads((root / BOXES_FILE).read_text())
    rows = {r.file.split("/")[-1]: r.raw_label for r in read_source(str(root)).records}
    assert sorted(written) == sorted(rows)
    assert all(set(written[name]) == (set() if label in ([], "No Finding") else set(label if isinstance(label, list)
               else label.split("|"))) for name, label in rows.items())


def test_shapes_like_is_a_multi_label_csv_source_of_its_shapes(tmp_path):
    from vitune.data.synthetic import SHAPE_BACKGROUND, SHAPES, make_shapes_like

    root = make_shapes_like(tmp_path / "shapes", n_images=60, seed=4, image_size=32)
    again = make_shapes_like(tmp_path / "again", n_images=60, seed=4, image_size=32)
    assert (root / "labels.csv").read_text() == (again / "labels.csv").read_text()
    assert (root / "images" / "00007.png").read_bytes() == (again / "images" / "00007.png").read_bytes()
    rows = read_source(str(root))
    assert detect_format(str(root)) == "csv" and len(rows.records) == 60 and not rows.skipped
    space = infer_label_space([record.raw_label for record in rows.records], task=rows.task, label_order=rows.label_order)
    assert space.task == "multi_label" and sorted(space.labels) == sorted(SHAPES)
    labels = np.array([space.encode(record.raw_label) for record in rows.records])
    assert labels.sum(axis=1).min() >= 1  # every image holds a shape
    assert 0.3 <= labels.mean() <= 0.7  # each kind on about half the images
    for record, row in zip(rows.records, labels):
        pixels = np.asarray(Image.open(root / record.file), np.float64)
        assert pixels.shape == (32, 32)
        bright = pixels > SHAPE_BACKGROUND + 70
        # a shape fills about 13x13 px of its quadrant, about half of it bright (a cross a bit less)
        assert 25 * row.sum() <= bright.sum() <= 130 * row.sum()
        assert np.median(pixels) == pytest.approx(SHAPE_BACKGROUND, abs=6)  # the plain background


def test_shapes_are_told_apart_by_their_structure():
    from vitune.data.synthetic import SHAPE_BACKGROUND, _render_shapes

    rng = np.random.default_rng(0)

    def mean_changes(shape: str) -> float:
        """Bright/dark changes between horizontal neighbours, on 20 images of ``shape`` alone."""
        images = np.stack([_render_shapes([shape], 32, rng) for _ in range(20)])
        bright = images > SHAPE_BACKGROUND + 70
        return float((bright[:, :, 1:] != bright[:, :, :-1]).sum(axis=(1, 2)).mean())

    # the textures alternate every few pixels, the cross holds solid arms
    cross = mean_changes("cross")
    assert mean_changes("checker") > 2 * cross
    assert mean_changes("stripes") > 1.5 * cross
    assert mean_changes("rings") > 1.5 * cross
