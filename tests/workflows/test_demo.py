"""`vitune demo`: the whole path on built-in data, a previous demo replaced, foreign folders refused."""

import json

import pytest
from tiny_run import run_cli

from vitune.config import DemoConfig
from vitune.errors import UserError
from vitune.workflows.demo import MARKER, clear_previous_demo, make_scratch_vit, run_demo


def test_scratch_vit_loads_as_a_classifier_with_its_processor(tmp_path):
    from vitune.models.aliases import load_classifier, resolve_preprocessing

    path = make_scratch_vit(tmp_path / "base", image_size=32)
    prep = resolve_preprocessing(str(path))
    model = load_classifier(str(path), "multi_label", ["a", "b"])
    assert (prep.image_size, prep.mean, prep.std) == (32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert model.config.problem_type == "multi_label_classification" and model.classifier.out_features == 2


def test_foreign_folder_is_refused_and_a_previous_demo_is_emptied(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match="not a previous demo"):
        clear_previous_demo(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").is_file()
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    (old / MARKER).write_text("{}")
    clear_previous_demo(old)
    assert list(old.iterdir()) == []


def test_config_checks_itself():
    with pytest.raises(UserError, match="--patients 3 is too few"):
        DemoConfig(patients=3)


@pytest.mark.slow
def test_small_demo_runs_the_whole_path(tmp_path):
    out = tmp_path / "demo"
    lines = []
    summary = run_demo(DemoConfig(out=out, patients=60, epochs=1, bootstrap=50), echo=lines.append)
    assert [line.split(":")[0] for line in lines if ": " in line and line.startswith("[")] == [
        "[1/5] data", "[2/5] train", "[3/5] heads", "[4/5] evaluate", "[5/5] report"]
    for path in ("metrics.json", "model/config.json", "model/model.safetensors", "plots/roc.png",
                 "heads/heads.json", "eval/test/metrics_test.json", "report.html", "config.yaml"):
        assert (out / path).is_file(), path
    saved = json.loads((out / MARKER).read_text())
    assert saved == json.loads(json.dumps(summary.to_json())) and saved["status"] == "done"
    test = json.loads((out / "eval/test/metrics_test.json").read_text())
    assert saved["test_roc_auc_macro"] == test["metrics"]["roc_auc_macro"]
    assert set(saved["heads_validation_roc_auc_macro"]) == {"svm", "logreg", "mlp", "ensemble"}
    assert sum(saved["images"].values()) == len(list((out / "source" / "images").iterdir()))


@pytest.mark.slow
def test_demo_with_a_given_checkpoint_prepares_at_its_size(tmp_path, tiny_vit):
    from vitune.models.aliases import resolve_preprocessing

    summary = run_demo(DemoConfig(out=tmp_path / "d", model=str(tiny_vit), patients=30, epochs=1, bootstrap=20),
                       echo=lambda line: None)
    dataset = json.loads((tmp_path / "d" / "data" / "dataset.json").read_text())
    assert dataset["image_size"] == resolve_preprocessing(str(tiny_vit)).image_size
    assert summary.model == str(tiny_vit) and not (tmp_path / "d" / "base-model").exists()


def test_cli_demo_refuses_a_foreign_out(tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("keep me")
    code, _, err = run_cli(monkeypatch, capsys, "demo", "--out", tmp_path)
    assert code == 2 and err.strip().startswith("error: --out") and len(err.strip().splitlines()) == 1
    assert (tmp_path / "notes.txt").read_text() == "keep me"
