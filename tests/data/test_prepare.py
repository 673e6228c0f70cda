"""``prepare`` end to end: image folder and ChestX-ray14 sources -> a DATASET_DIR that loads."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image
from sample_images import write_known_images

from vitune.config import PrepareConfig
from vitune.data import DatasetInfo, load_dataset_dir, synthetic
from vitune.data import cache as cache_module
from vitune.data import prepare as prepare_config
from vitune.errors import UserError


def prepare(source, out, **settings) -> DatasetInfo:
    return prepare_config(PrepareConfig(source=source, out=out, **settings))

SPEC_KEYS = {"version", "task", "labels", "image_size", "format", "source", "splits", "skipped", "fingerprint"}


def make_imagefolder(root: Path, per_class: int = 10) -> Path:
    """``root/{cat,dog}/`` with flat-colour 8x8 PNGs, plus the known and broken images in ``cat/``."""
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    known = write_known_images(root / "cat")
    (root / "cat" / "noise.png").unlink()
    return root, known


@pytest.fixture
def imagefolder(tmp_path):
    return make_imagefolder(tmp_path / "src")


def _rows_by_file(dataset_dir: Path) -> dict[str, dict]:
    ds = datasets.load_from_disk(str(dataset_dir)).with_format("numpy")
    return {row["file"]: row for split in ds for row in ds[split]}


def test_prepare_imagefolder_end_to_end(imagefolder, tmp_path):
    source, _ = imagefolder
    out = tmp_path / "ds"
    info = prepare(source, out, image_size=4, seed=1)

    saved = json.loads((out / "dataset.json").read_text())
    assert SPEC_KEYS <= set(saved) and saved["version"] == 1
    assert info.task == "single_label" and info.labels == ["cat", "dog"] and info.image_size == 4
    assert info.format == "imagefolder" and info.split_method == "stratified" and info.seed == 1
    reasons = {row["file"]: row["reason"] for row in info.skipped}
    assert reasons == {"cat/empty.png": "empty file", "cat/truncated.png": "truncated image",
                       "cat/bomb.png": reasons["cat/bomb.png"]}
    assert reasons["cat/bomb.png"].startswith("decompression bomb")
    assert sum(info.splits.values()) == 23 and set(info.splits) == {"train", "validation", "test"}

    ds = datasets.load_from_disk(str(out))
    assert {split: ds[split].num_rows for split in ds} == info.splits
    assert ds["train"].features["pixel_values"].shape == (3, 4, 4)
    rows = _rows_by_file(out)
    assert rows["cat/gray16.png"]["pixel_values"][:, 0, 0].tolist() == [128, 128, 128]  # scaled, not clipped
    assert rows["cat/rgba.png"]["pixel_values"][:, 2, 2].tolist() == [255, 255, 255]  # alpha on white
    assert rows["cat/gray8.png"]["pixel_values"][:, 1, 2].tolist() == [60, 60, 60]  # gray expanded
    assert rows["dog/3.png"]["labels"] == 1 and rows["cat/3.png"]["labels"] == 0
    assert load_dataset_dir(out)[1] == DatasetInfo.load(out)


def test_second_prepare_is_a_cache_hit_and_changes_rebuild(imagefolder, tmp_path, monkeypatch, caplog):
    source, known = imagefolder
    out = tmp_path / "ds"
    first = prepare(source, out, image_size=4)

    def no_decoding(job):
        raise AssertionError("a cache hit must not decode")

    monkeypatch.setattr(cache_module, "decode_job", no_decoding)
    with caplog.at_level(logging.INFO, logger="vitune.data.prepare"):
        again = prepare(source, out, image_size=4)
    assert again == first
    assert any("cache hit" in message for message in caplog.messages)
    monkeypatch.undo()

    resized = prepare(source, out, image_size=8)  # a changed option rebuilds
    assert resized.fingerprint != first.fingerprint
    assert datasets.load_from_disk(str(out))["train"].features["pixel_values"].shape == (3, 8, 8)

    shutil.copy(known["gray8"], source / "dog" / "extra.png")  # a changed source rebuilds
    grown = prepare(source, out, image_size=8)
    assert grown.fingerprint != resized.fingerprint
    assert sum(grown.splits.values()) == sum(resized.splits.values()) + 1
    assert "dog/extra.png" in _rows_by_file(out)


def test_a_model_without_an_image_size_is_looked_up_a_layer_above(imagefolder, tmp_path, tiny_vit):
    source, _ = imagefolder
    with pytest.raises(UserError, match="vitune.workflows.prepare.prepare"):
        prepare(source, tmp_path / "ds", model=str(tiny_vit))
    assert not (tmp_path / "ds").exists()


def test_chestxray14_official_split_groups_patients(tmp_path):
    source = tmp_path / "nih"
    synthetic.make_chestxray_like(source, n_patients=40, image_size=32)
    out = tmp_path / "ds"
    info = prepare(source, out, image_size=16, val_fraction=0.2)

    assert info.format == "chestxray14" and info.task == "multi_label" and len(info.labels) == 14
    assert "No Finding" not in info.labels and info.split_method == "official"
    test_names = set((source / "test_list.txt").read_text().split())
    ds = datasets.load_from_disk(str(out))
    assert {Path(f).name for f in ds["test"]["file"]} == test_names
    assert not {Path(f).name for f in [*ds["train"]["file"], *ds["validation"]["file"]]} & test_names
    patients = {split: set(ds[split]["group"]) for split in ds}
    assert not patients["train"] & patients["validation"]
    assert abs(info.splits["validation"] / (info.splits["train"] + info.splits["validation"]) - 0.2) < 0.08
    labels = np.asarray(list(ds["validation"]["labels"]))
    assert labels.shape[1] == 14 and set(np.unique(labels)) <= {0.0, 1.0}

    with_no_finding = prepare(source, tmp_path / "ds15", image_size=16, no_finding_as_label=True)
    assert len(with_no_finding.labels) == 15 and "No Finding" in with_no_finding.labels


def test_csv_multi_label_with_group_column_keeps_patients_whole(tmp_path):
    source = tmp_path / "csvsrc"
    (source / "img").mkdir(parents=True)
    rng = np.random.default_rng(4)
    lines = ["path,findings,subject"]
    for i in range(60):
        Image.fromarray(rng.integers(0, 255, (6, 6), dtype=np.uint8), "L").save(source / "img" / f"{i}.png")
        findings = "|".join(name for name, p in (("edema", 0.4), ("mass", 0.3)) if rng.random() < p)
        lines.append(f"img/{i}.png,{findings or 'none'},s{i // 3}")
    (source / "labels.csv").write_text("\n".join(lines) + "\n")

    info = prepare(source / "labels.csv", tmp_path / "ds", image_size=6, image_column="path",
                   label_column="findings", label_separator="|", group_column="subject", seed=2)
    assert info.task == "multi_label" and info.format == "csv" and info.split_method == "group"
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    subjects = {split: set(ds[split]["group"]) for split in ds}
    assert sum(len(s) for s in subjects.values()) == 20 == len(set.union(*subjects.values()))
    assert sum(info.splits.values()) == 60 and ds["train"][0]["file"].startswith("img/")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": 1.2}, "--val-fraction"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "sum below 1"),
        ({"task": "detection"}, "--task"),
        ({"split": "kfold"}, "--split"),
        ({"image_size": 0}, "--image-size"),
    ],
)
def test_bad_options_are_user_errors(imagefolder, tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        prepare(imagefolder[0], tmp_path / "ds", **kwargs)


def test_unusable_sources_and_outputs_are_user_errors(imagefolder, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        prepare(tmp_path / "missing", tmp_path / "ds")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        prepare(imagefolder[0], busy)
    assert (busy / "notes.txt").read_text() == "mine"


def test_home_relative_paths_are_expanded(tmp_path, monkeypatch):
    from vitune.data.prepare import PrepareConfig

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "src").mkdir()
    config = PrepareConfig(source="~/src", out="~/data")
    assert (config.source, config.out) == (str(tmp_path / "src"), tmp_path / "data")
    assert PrepareConfig(source="hf:~name", out=tmp_path / "o").source == "hf:~name"


def test_damaged_dataset_dir_says_prepare_again(dataset_dir_factory):
    data = dataset_dir_factory(task="multi_label")
    shutil.rmtree(data / "train")
    with pytest.raises(UserError, match="is damaged .*: prepare the dataset again"):
        load_dataset_dir(data)
    (data / "dataset.json").write_text("{not json")
    with pytest.raises(UserError, match="dataset.json is damaged"):
        load_dataset_dir(data)


def test_a_plain_file_as_source_is_refused_with_what_to_pass(tmp_path):
    (tmp_path / "x.png").write_bytes(b"png")
    with pytest.raises(UserError, match="is a file but not a label CSV: pass its folder, a .csv file"):
        prepare(tmp_path / "x.png", tmp_path / "out")  # checked where the command runs: the config reads no file
    assert not (tmp_path / "out").exists()


def test_views_filter_a_chestxray14_release_by_its_view_position_column(tmp_path):
    import csv

    source = tmp_path / "nih"
    synthetic.make_chestxray_like(source, n_patients=30, image_size=32)
    with open(source / "Data_Entry_2017_v2020.csv", newline="") as handle:
        views = [row["View Position"] for row in csv.DictReader(handle)]
    info = prepare(source, tmp_path / "ds", image_size=8, views="pa")
    assert sum(info.splits.values()) == views.count("PA") > 0
    assert info.views == {"kept": ["PA"], "dropped": {"AP": views.count("AP")}}
    again = prepare(source, tmp_path / "all", image_size=8)
    assert again.views is None and sum(again.splits.values()) == len(views)
    with pytest.raises(UserError, match="--views ' , ' names no view"):
        prepare(source, tmp_path / "none", views=" , ")
