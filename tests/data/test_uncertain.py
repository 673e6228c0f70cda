"""CheXpert-style labels: one column per finding, 1 / 0 / -1 / blank, --uncertain policies, dataset.json counts."""

from __future__ import annotations

import csv
import json
import math

import datasets
import numpy as np
import pytest
from chexpert_like import FINDINGS, write_chexpert_like

from vitune.config import EvaluateConfig, HeadsConfig, PrepareConfig, TrainConfig
from vitune.data import prepare
from vitune.data.sources import read_source
from vitune.data.sources.base import SourceOptions
from vitune.errors import UserError
from vitune.evaluation.evaluate import evaluate
from vitune.heads import fit_heads
from vitune.tasks.labels import LabelStates, state_counts
from vitune.training.fine_tune import train


def _cells(csv_path) -> list[list[str]]:
    with open(csv_path, newline="") as handle:
        rows = list(csv.reader(handle))
    index = [rows[0].index(name) for name in FINDINGS]
    return [[row[i] for i in index] for row in rows[1:]]


def _expected(cell: str, policy: str) -> float:
    return {"1.0": 1.0, "0.0": 0.0, "": math.nan, "-1.0": {"ignore": math.nan, "zeros": 0.0, "ones": 1.0}[policy]}[cell]


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory):
    return write_chexpert_like(tmp_path_factory.mktemp("chexpert"))


@pytest.mark.parametrize("policy", ["ignore", "zeros", "ones"])
def test_each_policy_encodes_every_cell(chexpert, tmp_path, policy):
    info = prepare(PrepareConfig(source=chexpert, out=tmp_path / "ds", image_size=16, group_column="Patient",
                                 label_column=",".join(FINDINGS), uncertain=policy, workers=1))
    expected = {f"train/patient{p:05d}/study{s}/view1_frontal.png": row
                for (p, s), row in zip(((p, s) for p in range(40) for s in (1, 2)), _cells(chexpert))}
    unknown = sorted(f for f, row in expected.items() if all(math.isnan(_expected(c, policy)) for c in row))
    assert (len(unknown) > 0) == (policy == "ignore")  # the data holds rows only uncertain or blank
    assert info.task == "multi_label" and info.labels == FINDINGS
    assert info.skipped == [{"file": f, "reason": "no known label (every finding blank, or uncertain under "
                             "--uncertain ignore)"} for f in unknown]
    dd = datasets.load_from_disk(str(tmp_path / "ds"))
    seen = 0
    for split in dd.values():
        for file, labels in zip(split["file"], split["labels"]):
            want = [_expected(cell, policy) for cell in expected[file]]
            np.testing.assert_array_equal(np.asarray(labels, dtype=np.float64), np.asarray(want))
            seen += 1
    assert seen == 80 - len(unknown)
    saved = json.loads((tmp_path / "ds" / "dataset.json").read_text())["label_states"]
    assert saved["uncertain"] == policy and saved["missing"] == "ignore"
    for j, name in enumerate(FINDINGS):
        column = [row[j] for file, row in expected.items() if file not in unknown]
        assert saved["counts"][name] == {"positive": column.count("1.0"), "negative": column.count("0.0"),
                                         "uncertain": column.count("-1.0"), "missing": column.count("")}


def test_patients_never_span_two_splits(chexpert, tmp_path):
    prepare(PrepareConfig(source=chexpert, out=tmp_path / "ds", image_size=16, group_column="Patient",
                          label_column=",".join(FINDINGS), workers=1))
    dd = datasets.load_from_disk(str(tmp_path / "ds"))
    patients = {name: {f.split("/")[1] for f in split["file"]} for name, split in dd.items()}
    assert sum(len(v) for v in patients.values()) == 40
    assert not patients["train"] & patients["validation"] and not patients["train"] & patients["test"]


def test_finding_columns_are_detected_without_label_column(chexpert):
    rows = read_source(chexpert, "csv", SourceOptions(group_column="Patient"))
    assert rows.label_order == FINDINGS and rows.task == "multi_label"  # not Sex, Age, AP/PA or Patient
    assert all(isinstance(r.raw_label, LabelStates) for r in rows.records)
    assert {r.view for r in rows.records} == {"AP", "PA"}  # CheXpert's AP/PA column gives the view


def test_malformed_and_all_blank_rows_are_skipped_with_their_reason(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        (tmp_path / name).write_bytes(b"")  # decoding comes later: the reader checks the labels
    (tmp_path / "labels.csv").write_text("image,Edema,Effusion\na.png,1,0\nb.png,2,0\nc.png,,\nd.png,-1,\n")
    rows = read_source(tmp_path / "labels.csv", "csv", SourceOptions(label_columns=["Edema", "Effusion"]))
    reasons = {s.file: s.reason for s in rows.skipped}
    assert reasons["b.png"] == "malformed label '2' in column 'Edema': use 1, 0, -1 or blank"
    assert reasons["c.png"] == "missing label"
    assert [r.file for r in rows.records] == ["a.png", "d.png"]
    assert dict(rows.records[1].raw_label) == {"Edema": "uncertain", "Effusion": "missing"}
    with pytest.raises(Exception, match="no known label"):
        rows.records[1].raw_label.encode(["Edema", "Effusion"], "ignore")  # reported as a skipped row by prepare
    assert rows.records[1].raw_label.encode(["Edema", "Effusion"], "ones")[0] == 1.0
    assert state_counts([r.raw_label for r in rows.records], ["Edema", "Effusion"])["Effusion"] == {
        "positive": 0, "negative": 1, "uncertain": 0, "missing": 1}


def test_user_mistakes_are_one_line_errors(chexpert, tmp_path):
    with pytest.raises(UserError, match="--uncertain 'maybe' is not supported: use one of ignore, zeros, ones"):
        PrepareConfig(source=chexpert, out=tmp_path / "ds", uncertain="maybe")
    with pytest.raises(UserError, match="no column 'Nope'"):
        read_source(chexpert, "csv", SourceOptions(label_columns=["Edema", "Nope"]))
    with pytest.raises(UserError, match="several label columns make a multi-label dataset"):
        prepare(PrepareConfig(source=chexpert, out=tmp_path / "ds", task="single_label", workers=1,
                              label_column=",".join(FINDINGS), image_size=16))


@pytest.mark.slow
def test_a_chexpert_style_csv_prepares_trains_evaluates_and_fits_heads(tiny_vit, tmp_path):
    csv_path = write_chexpert_like(tmp_path / "chexpert", patients=30)
    data = tmp_path / "ds"
    info = prepare(PrepareConfig(source=csv_path, out=data, image_size=32, group_column="Patient", workers=1))
    assert info.labels == FINDINGS and info.label_states["uncertain"] == "ignore"
    run = tmp_path / "run"
    result = train(TrainConfig(data=str(data), model=str(tiny_vit), out=str(run), epochs=2, batch_size=8,
                               lr=3e-3, pos_weight="auto"))
    metrics = result.metrics
    assert all(np.isfinite(h["train_loss"]) for h in metrics["history"] if h.get("train_loss") is not None)
    known = sum(v["support"] for v in metrics["per_label"].values())
    unknown = sum(v["unknown"] for v in metrics["per_label"].values())
    assert unknown > 0 and known + unknown == 3 * metrics["num_samples"]
    assert metrics["metrics"]["roc_auc_macro"] is not None
    test = evaluate(EvaluateConfig(run=run, bootstrap=50)).to_json()
    assert test["metrics"]["roc_auc_macro"] is not None and sum(v["unknown"] for v in test["per_label"].values()) > 0
    heads = fit_heads(HeadsConfig(model=str(run), data=str(data), heads="svm,logreg")).to_json()
    assert all(h["metrics"]["roc_auc_macro"] is not None for h in heads["heads"].values())
    assert json.loads((data / "dataset.json").read_text())["label_states"]["counts"]["Edema"]["missing"] > 0
