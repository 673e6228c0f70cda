"""Patient metadata (sex, age, view, --meta-columns) is read from each source's own columns and kept."""

from __future__ import annotations

import csv

import pytest
from chexpert_like import write_chexpert_like
from dicom_files import phantom, write_dicom

from vitune.config import PrepareConfig
from vitune.data.dataset_dir import load_dataset_dir
from vitune.data.metadata import age_bin_names, age_groups, normalise_sex, parse_age
from vitune.data.prepare import prepare
from vitune.data.show import summarize
from vitune.data.synthetic import make_chestxray_like
from vitune.errors import UserError


def test_cells_are_normalised_to_m_f_whole_years_and_none():
    assert [normalise_sex(cell) for cell in ("M", "female", " Male ", "O", "", None)] == ["M", "F", "M", None, None, None]
    assert [parse_age(cell) for cell in ("045Y", "58", "58.9", "018M", "003W", "", "old", "412")] == [
        45, 58, 58, 1, 0, None, None, None]
    assert age_bin_names([40, 60, 80]) == ["0-39", "40-59", "60-79", "80+"]
    assert age_groups([0, 39, 40, 79, 80, 101, None], [40, 60, 80]) == [
        "0-39", "0-39", "40-59", "60-79", "80+", "80+", "unknown"]


def test_chestxray14_keeps_gender_age_and_view_as_the_release_says(tmp_path):
    source = make_chestxray_like(tmp_path / "src", n_patients=12, image_size=32)
    info = prepare(PrepareConfig(source=str(source), out=tmp_path / "ds", image_size=32, workers=1))
    assert info.metadata_columns == ["sex", "age", "view"]
    with open(source / "Data_Entry_2017_v2020.csv") as handle:
        release = {row["Image Index"]: row for row in csv.DictReader(handle)}
    ds, _ = load_dataset_dir(tmp_path / "ds")
    for row in ds["train"].select_columns(["file", "sex", "age", "view"]):
        listed = release[row["file"].rsplit("/", 1)[-1]]
        assert (row["sex"], row["age"], row["view"]) == (
            listed["Patient Gender"], int(listed["Patient Age"]), listed["View Position"])
    shown = summarize(tmp_path / "ds")
    assert sum(shown.metadata["sex"]["train"].values()) == info.splits["train"]
    assert set(shown.metadata["age"]["train"]) <= {"0-39", "40-59", "60-79", "80+"}


def test_chexpert_columns_and_meta_columns_are_kept_and_a_missing_one_is_a_user_error(tmp_path):
    csv_path = write_chexpert_like(tmp_path / "chexpert", patients=8)
    info = prepare(PrepareConfig(source=str(csv_path), out=tmp_path / "ds", image_size=32, workers=1,
                                 meta_columns=["Frontal/Lateral"], group_column="Patient"))
    assert info.metadata_columns == ["sex", "age", "view", "Frontal/Lateral"]
    ds, _ = load_dataset_dir(tmp_path / "ds")
    rows = ds["train"].select_columns(["file", "sex", "age", "view", "Frontal/Lateral"])
    for row in rows:
        patient = int(row["file"].split("/")[1].removeprefix("patient"))
        study = int(row["file"].split("/")[2].removeprefix("study"))
        assert row["sex"] == ("F" if patient % 2 else "M") and row["age"] == 40 + patient % 30
        assert row["view"] == ("PA" if study == 2 else "AP") and row["Frontal/Lateral"] == "Frontal"
    with pytest.raises(UserError, match="--meta-columns"):
        prepare(PrepareConfig(source=str(csv_path), out=tmp_path / "ds2", image_size=32, workers=1,
                              meta_columns=["Scanner"]))
    with pytest.raises(UserError, match="already"):
        PrepareConfig(source=str(csv_path), out=tmp_path / "ds3", meta_columns=["age"])


def test_a_dicom_header_gives_sex_and_age(tmp_path):
    root = tmp_path / "src"
    for index, (sex, age) in enumerate((("F", "045Y"), ("M", "070Y"), ("F", "030Y"), ("M", "081Y"))):
        write_dicom(root / f"{index}.dcm", phantom(3000, 1000), patient=f"P{index}", sex=sex, age=age)
    (root / "labels.csv").write_text("file,label\n" + "".join(f"{i}.dcm,{'ab'[i % 2]}\n" for i in range(4)))
    info = prepare(PrepareConfig(source=str(root / "labels.csv"), out=tmp_path / "ds", image_size=32, workers=1,
                                 val_fraction=0.0, test_fraction=0.0))
    ds, _ = load_dataset_dir(tmp_path / "ds")
    ages = dict(zip(ds["train"]["file"], ds["train"]["age"]))
    assert info.metadata_columns == ["sex", "age", "view"] and ages == {"0.dcm": 45, "1.dcm": 70, "2.dcm": 30, "3.dcm": 81}
