"""Patient-grouped folds: whole patients per fold, the pool covered once, the test split untouched, rare findings spread."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_patient_dataset_dir

from vitune.config import TrainConfig
from vitune.data.dataset_dir import load_dataset_dir
from vitune.data.folds import (
    GROUPED_ONLY,
    STRATA,
    assign_folds,
    files_digest,
    fold_record,
    fold_splits,
    load_run_dataset,
    open_run_dataset,
    plan_folds,
    rarest_stratum,
)
from vitune.errors import UserError
from vitune.storage.layout import RunDir


def column(split, name: str = "file") -> list:
    """One column of a split as a list."""
    return list(split[name])


@pytest.fixture(scope="module")
def patient_data(tmp_path_factory):
    """20 pool patients (14 train, 6 validation) and 5 test patients, 3 images each."""
    return write_patient_dataset_dir(tmp_path_factory.mktemp("folds") / "data", {"train": 14, "validation": 6, "test": 5})


def test_each_patient_is_in_one_fold_and_the_folds_cover_train_and_validation_once(patient_data):
    ds, info = load_dataset_dir(patient_data)
    plan = plan_folds(ds, info, patient_data, folds=4, seed=0)
    pool_files = column(ds["train"]) + column(ds["validation"])
    validation_files, validation_patients = [], []
    for fold in range(4):
        splits = fold_splits(ds, plan, fold, patient_data)
        train_patients, held_out = set(column(splits["train"], "group")), set(column(splits["validation"], "group"))
        assert not train_patients & held_out  # no patient on both sides of a fold
        assert sorted(column(splits["train"]) + column(splits["validation"])) == sorted(pool_files)
        assert column(splits["test"]) == column(ds["test"])  # the test split as prepared
        assert not set(column(ds["test"])) & set(column(splits["train"]) + column(splits["validation"]))
        assert plan.sizes(fold) == {"train": 60 - len(splits["validation"]), "validation": len(splits["validation"]),
                                    "validation_patients": len(held_out)}
        validation_files += column(splits["validation"])
        validation_patients += sorted(held_out)
    assert sorted(validation_files) == sorted(pool_files)  # every image validated exactly once
    assert len(validation_patients) == len(set(validation_patients)) == 20  # no patient in two folds' validation
    assert plan.stratified_on == STRATA["multi_label"]


def test_the_folds_are_drawn_again_the_same_and_the_seed_changes_them(patient_data):
    ds, info = load_dataset_dir(patient_data)
    first, again = plan_folds(ds, info, patient_data, 3, seed=0), plan_folds(ds, info, patient_data, 3, seed=0)
    np.testing.assert_array_equal(first.fold_of_row, again.fold_of_row)
    assert not np.array_equal(first.fold_of_row, plan_folds(ds, info, patient_data, 3, seed=1).fold_of_row)
    settings = TrainConfig(data=str(patient_data), model="m", out="o", folds=3, fold=2).to_dict()
    fold_ds, _ = load_run_dataset(patient_data, settings)  # how a fold's run reads its data back
    assert column(fold_ds["validation"]) == column(fold_splits(ds, first, 2, patient_data)["validation"])


def test_the_rarest_positive_finding_is_each_image_s_class():
    strata = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 1], [1, 0, 0]], dtype=float)  # column counts 3, 1, 1
    np.testing.assert_array_equal(rarest_stratum(strata), [1, 3, 2, 0])  # no finding: class 3 of its own


def test_a_rare_finding_reaches_every_fold_s_validation():
    groups = np.array([f"p{i // 2}" for i in range(200)], dtype=object)  # 100 patients, 2 images each
    strata = np.zeros((200, 2))
    strata[::2, 0] = 1  # a common finding on one image of every patient
    strata[1:40:10, 1] = 1  # a rare one: 4 patients
    folds, stratified = assign_folds(groups, rarest_stratum(strata), folds=4, seed=0)
    assert stratified
    rare_folds = {int(folds[row]) for row in np.flatnonzero(strata[:, 1])}
    assert rare_folds == {0, 1, 2, 3}


def test_too_few_images_per_class_falls_back_to_grouping_alone():
    groups = np.array(["a", "b", "c", "d"], dtype=object)
    folds, stratified = assign_folds(groups, np.array([0, 1, 2, 3]), folds=3, seed=0)
    assert not stratified and sorted(np.bincount(folds)) == [1, 1, 2]
    assert GROUPED_ONLY.startswith("nothing")


def test_more_folds_than_patients_is_one_clear_error(patient_data):
    ds, info = load_dataset_dir(patient_data)
    with pytest.raises(UserError, match=r"--folds 21 needs at least 21 patients in train\+validation, there are 20"):
        plan_folds(ds, info, patient_data, folds=21, seed=0)


def test_images_without_a_patient_are_each_their_own():
    groups = np.array([None, None, None, "p", "p"], dtype=object)
    from vitune.data.folds import row_groups

    folds, _ = assign_folds(row_groups(list(groups)), np.zeros(5, dtype=np.int64), folds=4, seed=0)
    assert folds[3] == folds[4] and len(set(folds.tolist())) == 4


@pytest.mark.parametrize(("settings", "message"), [
    ({"folds": 1}, "--folds must be at least 2"),
    ({"fold": 0}, "--fold 0 picks one fold of a cross-validation: add --folds K"),
    ({"folds": 3, "fold": 3}, "--fold 3 is not a fold of --folds 3: give 0 to 2"),
    ({"folds": 3, "push_to_hub": "me/model"}, "--push-to-hub pushes one model and --folds trains K"),
])
def test_fold_settings_are_checked(settings, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(data="d", model="m", out="o", **settings)


def test_a_fold_read_back_with_other_folds_is_refused(patient_data, tmp_path):
    config = TrainConfig(data=str(patient_data), model="m", out=str(tmp_path / "fold-1"), folds=3, fold=1)
    run = RunDir(config.out)
    run.root.mkdir()
    config.save(run.config)
    validation = load_run_dataset(patient_data, config.to_dict())[0]["validation"]
    record = fold_record(config.to_dict(), validation)
    assert record == {"fold": 1, "folds": 3, "seed": 0, "validation_files_sha256": files_digest(validation)}
    run.metrics.write_text(json.dumps({"fold": record}))
    assert list(open_run_dataset(run)[0]["validation"]["file"]) == list(validation["file"])
    run.metrics.write_text(json.dumps({"fold": {**record, "validation_files_sha256": files_digest(validation.select([0]))}}))
    with pytest.raises(UserError, match="the folds drawn now differ from those .* was trained on"):
        open_run_dataset(run)
