"""`vitune tune`: a 3-trial Optuna search on tiny data, best.yaml trained again, the space file's checks."""

from __future__ import annotations

import json

import pytest
import yaml
from tiny_run import run_cli
from transformers import TrainerCallback
from transformers.utils import logging as hf_logging

import vitune.training.tune as tune_module
from vitune.config import TrainConfig, TuneConfig
from vitune.config.tune import load_space
from vitune.errors import UserError
from vitune.storage.layout import TuneDir

hf_logging.disable_progress_bar()


class RecordArguments(TrainerCallback):
    """What each trial's Trainer really trained with."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.seen.append({"lr": args.learning_rate, "batch_size": args.per_device_train_batch_size,
                          "warmup": args.warmup_steps})


@pytest.mark.slow
def test_three_trials_write_tune_json_and_best_yaml_trains(tiny_vit, dataset_dir_factory, tmp_path, monkeypatch,
                                                            capsys):
    recorder = RecordArguments()
    make_trainer = tune_module._search_trainer

    def recorded(*args):
        trainer = make_trainer(*args)
        trainer.add_callback(recorder)
        return trainer

    monkeypatch.setattr(tune_module, "_search_trainer", recorded)
    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 1.0e-3, high: 0.3, log: true}\nbatch_size: [4, 8]\nwarmup: {low: 0.0, high: 0.2}\n")
    data = dataset_dir_factory(sizes={"train": 16, "validation": 8})
    out = tmp_path / "search"
    code, stdout, err = run_cli(monkeypatch, capsys, "tune", "--data", data, "--model", tiny_vit, "--out", out,
                                "--trials", "3", "--space", space, "--epochs", "1")
    assert code == 0, err
    folder = TuneDir(out)
    doc = json.loads(folder.report.read_text())
    assert set(doc) == {"metric", "direction", "trials", "best"}
    assert (doc["metric"], doc["direction"]) == ("roc_auc_macro", "maximize")
    assert [t["number"] for t in doc["trials"]] == [0, 1, 2]
    assert all(set(t) == {"number", "params", "value", "state"} and set(t["params"]) == {"lr", "batch_size", "warmup"}
               for t in doc["trials"])
    assert recorder.seen == [t["params"] for t in doc["trials"]]  # each trial trained with its own settings
    finished = [t for t in doc["trials"] if t["state"] == "complete"]
    best = max(finished, key=lambda t: t["value"])
    assert doc["best"] == {"params": best["params"], "value": best["value"]}
    assert f"best roc_auc_macro {best['value']:.4f}" in stdout
    assert folder.plot.stat().st_size > 2000 and not folder.trials.exists()

    saved = TrainConfig.from_yaml(folder.best)
    assert {k: getattr(saved, k) for k in best["params"]} == best["params"]
    assert (saved.data, saved.epochs, saved.out) == (str(data), 1, str(folder.best_run))
    code, _, err = run_cli(monkeypatch, capsys, "train", "--config", folder.best, "--out", tmp_path / "again")
    assert code == 0, err
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["metrics"]["roc_auc_macro"] == pytest.approx(best["value"])  # best.yaml repeats the best trial
    assert yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())["out"] == str(tmp_path / "again")


@pytest.mark.parametrize("text, message", [
    ("lr: {low: 1.0e-3, high: 1.0e-5}", "need low < high"),
    ("lr: {low: 0, high: 1.0e-3, log: true}", "low > 0 with log"),
    ("dropout: [0.1, 0.2]", "searchable settings are lr, batch_size"),
    ("lr: 0.001", "give a list of choices or"),
    ("- lr", "must map settings"),
])
def test_a_bad_space_file_says_what_to_give(tmp_path, text, message):
    space = tmp_path / "space.yaml"
    space.write_text(text)
    with pytest.raises(UserError, match=message):
        TuneConfig(data="d", model="m", out="o", space=str(space)).search_space()  # read when the search starts


def test_default_space_and_invalid_choices(tmp_path):
    assert [p.name for p in load_space(None)] == ["lr", "batch_size", "warmup", "weight_decay"]
    [batch] = [p for p in load_space(None) if p.name == "batch_size"]
    assert batch.choices == (16, 32, 64)
    space = tmp_path / "space.yaml"
    space.write_text("scheduler: [cosine, wavy]\n")
    with pytest.raises(UserError, match="--scheduler 'wavy' is not supported"):
        tune_module._check_choices(TrainConfig(data="d", model="m", out="o"), load_space(str(space)))
    space.write_text("warmup: {low: 0.0, high: 1.5}\n")
    with pytest.raises(UserError, match="--warmup 1.5 is a fraction"):
        tune_module._check_choices(TrainConfig(data="d", model="m", out="o"), load_space(str(space)))
    with pytest.raises(UserError, match="--backend 'hyperopt' is not supported"):
        TuneConfig(data="d", model="m", out="o", backend="hyperopt")


def test_ray_backend_without_ray_is_a_clear_error(tiny_vit, dataset_dir_factory, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    config = TuneConfig(data=str(dataset_dir_factory(sizes={"train": 8, "validation": 8})), model=str(tiny_vit),
                        out=str(tmp_path / "search"), trials=1, backend="ray")
    with pytest.raises(UserError, match=r"pip install 'ray\[tune\]'"):
        tune_module.tune(config)


@pytest.mark.slow
def test_diverging_trials_are_recorded_as_failed_and_none_finished_is_an_error(tiny_vit, dataset_dir_factory,
                                                                              tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("lr: [1.0e+9, 1.0e+10]\nbatch_size: [8]\n")  # as test_train's diverging run
    config = TuneConfig(data=str(dataset_dir_factory()), model=str(tiny_vit),
                        out=str(tmp_path / "search"), trials=2, space=str(space), epochs=1)
    with pytest.raises(UserError, match="none of the 2 trials finished"):
        tune_module.tune(config)
    log = capsys.readouterr().err  # Optuna's log of each failed trial, with the trial's own lr
    assert "Lower --lr (now 1e+09)" in log and "Lower --lr (now 1e+10)" in log
