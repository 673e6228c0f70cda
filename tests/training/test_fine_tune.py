"""`vitune train` end to end on the tiny ViT: each task, RUN_DIR contents, resume, NaN stop, CLI."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import yaml
from interrupted_train import interrupted
from tiny_run import run_cli
from transformers.utils import logging as hf_logging

import vitune.training.fine_tune as train_module
from vitune.config import TrainConfig
from vitune.data.dataset_dir import DatasetInfo, features_for
from vitune.errors import UserError
from vitune.models.forward import pixel_batches
from vitune.models.ood import OodStatistics
from vitune.models.run import load_run
from vitune.storage.layout import RunDir
from vitune.tasks import compute_metrics, get_task
from vitune.training.fine_tune import auto_pos_weight, build_trainer, train

hf_logging.disable_progress_bar()
METRICS_KEYS = {"task", "split", "num_samples", "metrics", "per_label", "history", "train_seconds", "samples_per_second",
                "parameters", "hardware"}


def config_for(data, tiny_vit, out, **kwargs) -> TrainConfig:
    """Tiny, fast settings: 6 steps an epoch."""
    return TrainConfig(data=str(data), model=str(tiny_vit), out=str(out), **{"batch_size": 8, **kwargs})


def saved_validation(run_dir, data) -> tuple[np.ndarray, np.ndarray]:
    """Targets and the saved model's scores on the validation split."""
    split = datasets.load_from_disk(str(data))["validation"]
    return np.asarray(split.with_format("numpy")["labels"]), load_run(run_dir, "cpu").scores(pixel_batches(split, 16))


def brightness_coded_dataset(path, classes=3, size=32, n=(48, 24)) -> str:
    """Single-label data whose class sets the overall brightness (learnable by a tiny random ViT)."""
    rng = np.random.default_rng(1)
    splits = {}
    for split, count in zip(("train", "validation"), n):
        cls = np.arange(count) % classes
        pixels = rng.integers(0, 60, (count, 3, size, size)) + (cls * 80)[:, None, None, None]
        splits[split] = datasets.Dataset.from_dict(
            {"pixel_values": pixels.astype(np.uint8), "labels": cls.tolist(),
             "file": [f"{i}.png" for i in range(count)], "group": [None] * count},
            features=features_for("single_label", size),
        )
    datasets.DatasetDict(splits).save_to_disk(str(path))
    DatasetInfo(task="single_label", labels=[f"c{k}" for k in range(classes)], image_size=size,
                format="synthetic", source="tests", splits=dict(zip(("train", "validation"), n))).save(path)
    return str(path)


@pytest.mark.slow
def test_multi_label_run_dir_is_complete_and_loadable(tiny_vit, dataset_dir_factory, tmp_path):
    from PIL import Image
    from transformers import AutoModelForImageClassification, pipeline

    result = train(config_for(dataset_dir_factory(task="multi_label"), tiny_vit, tmp_path / "run", epochs=5, lr=1e-3))
    run = tmp_path / "run"
    doc = json.loads((run / "metrics.json").read_text())
    assert set(doc) == METRICS_KEYS and doc == result.metrics
    assert (doc["task"], doc["split"], doc["num_samples"]) == ("multi_label", "validation", 24)
    assert set(doc["metrics"]) == {"roc_auc_macro", "average_precision_macro", "f1_macro"}
    assert doc["metrics"]["roc_auc_macro"] > 0.8
    assert [h["epoch"] for h in doc["history"]] == [1, 2, 3, 4, 5]
    assert set(doc["history"][0]) >= {"epoch", "train_loss", "lr", "eval_loss", "eval_roc_auc_macro"}
    assert doc["history"][-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine ends at zero
    best = max(h["eval_roc_auc_macro"] for h in doc["history"])
    assert doc["metrics"]["roc_auc_macro"] == pytest.approx(best)  # the best epoch's model is the one kept
    assert doc["train_seconds"] > 0 and doc["samples_per_second"] > 0
    for name in ("loss", "lr", "roc"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 2000
    assert not (run / "plots" / "confusion.png").exists()
    assert not (run / "model" / "training_args.bin").exists()
    assert (run / "model" / "model.safetensors").is_file()
    statistics = OodStatistics.load(RunDir(run).ood)  # the classifier's input on train, threshold on validation
    assert (statistics.dim, statistics.train_rows_used, len(statistics.validation_distances)) == (32, 48, 24)

    y_true, scores = saved_validation(run, tmp_path / "ds0")
    assert scores.shape == (24, 3) and y_true.shape == (24, 3)
    assert doc["metrics"]["roc_auc_macro"] == pytest.approx(
        compute_metrics("multi_label", y_true, scores, ["a", "b", "c"]).metrics["roc_auc_macro"], abs=1e-6)

    model = AutoModelForImageClassification.from_pretrained(run / "model")
    assert model.config.problem_type == "multi_label_classification"
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    classify = pipeline("image-classification", model=str(run / "model"), function_to_apply="sigmoid")
    pixels = datasets.load_from_disk(str(tmp_path / "ds0"))["validation"].with_format("numpy")[0]["pixel_values"]
    answer = {row["label"]: row["score"] for row in classify(Image.fromarray(np.asarray(pixels, dtype=np.uint8).transpose(1, 2, 0)))}
    split = datasets.load_from_disk(str(tmp_path / "ds0"))["validation"]
    uncalibrated = load_run(run, "cpu", calibrate=False).scores(pixel_batches(split, 16))  # the pipeline has no temperature
    np.testing.assert_allclose([answer[k] for k in "abc"], uncalibrated[0], atol=2e-3)


@pytest.mark.slow
def test_single_label_learns_and_plots_confusion(tiny_vit, tmp_path):
    data = brightness_coded_dataset(tmp_path / "ds")
    doc = train(config_for(data, tiny_vit, tmp_path / "run", epochs=4, lr=5e-3, augment="light")).metrics
    assert set(doc["metrics"]) == {"accuracy", "f1_macro", "roc_auc_ovr"}
    assert doc["metrics"]["roc_auc_ovr"] >= 0.95 and doc["metrics"]["accuracy"] > 0.5  # chance: 1/3
    y_true, scores = saved_validation(tmp_path / "run", data)
    assert np.mean(scores.argmax(1) == y_true) == pytest.approx(doc["metrics"]["accuracy"])
    assert (tmp_path / "run" / "plots" / "confusion.png").is_file()


@pytest.mark.slow
def test_regression_bce_is_scaled_and_inverted(tiny_vit, dataset_dir_factory, tmp_path):
    from transformers import AutoConfig

    data = dataset_dir_factory(task="regression")
    doc = train(config_for(data, tiny_vit, tmp_path / "run", epochs=3, lr=1e-3, regression_loss="bce")).metrics
    assert set(doc["metrics"]) == {"rmse", "mae", "r2"} and doc["per_label"] == {}
    config = AutoConfig.from_pretrained(tmp_path / "run" / "model")
    assert config.vitune_regression_loss == "bce" and config.problem_type == "regression"
    train_y = np.asarray(datasets.load_from_disk(str(data))["train"]["labels"])
    assert config.vitune_label_range == pytest.approx([train_y.min(), train_y.max()])
    y_true, scores = saved_validation(tmp_path / "run", data)
    assert train_y.min() <= scores.min() and scores.max() <= train_y.max()  # sigmoid, unscaled
    assert doc["metrics"]["rmse"] == pytest.approx(np.sqrt(np.mean((scores - y_true) ** 2)))
    assert get_task("regression").scores(np.zeros((1, 1)), config)[0] == pytest.approx(np.mean(config.vitune_label_range))
    assert not (tmp_path / "run" / "plots" / "roc.png").exists()


@pytest.mark.slow
def test_label_with_one_class_has_null_auc(tiny_vit, dataset_dir_factory, tmp_path):
    source = dataset_dir_factory(task="multi_label")
    ds = datasets.load_from_disk(str(source))
    ds["validation"] = ds["validation"].map(lambda row: {"labels": [*row["labels"][:2], 0.0]})
    ds.save_to_disk(str(tmp_path / "one_class"))
    (tmp_path / "one_class" / "dataset.json").write_text((source / "dataset.json").read_text())
    doc = train(config_for(tmp_path / "one_class", tiny_vit, tmp_path / "run", epochs=1)).metrics
    assert doc["per_label"]["c"]["roc_auc"] is None
    known = [doc["per_label"][k]["roc_auc"] for k in ("a", "b")]
    assert doc["metrics"]["roc_auc_macro"] == pytest.approx(np.mean(known))


@pytest.mark.slow
def test_resume_ends_like_an_uninterrupted_run(tiny_vit, dataset_dir_factory, tmp_path, monkeypatch):
    data = dataset_dir_factory(task="multi_label")
    settings = {"epochs": 3, "lr": 1e-3, "augment": "light"}
    full = train(config_for(data, tiny_vit, tmp_path / "full", **settings)).metrics

    build = train_module.build_trainer
    monkeypatch.setattr(train_module, "build_trainer", interrupted(build))
    first = train(config_for(data, tiny_vit, tmp_path / "split", **settings)).metrics
    assert len(first["history"]) == 1
    monkeypatch.setattr(train_module, "build_trainer", build)
    with pytest.raises(UserError, match="already holds a run"):
        train(config_for(data, tiny_vit, tmp_path / "split", **settings))
    resumed = train(config_for(data, tiny_vit, tmp_path / "split", resume=True, **settings)).metrics
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    for before, after in zip(full["history"], resumed["history"]):
        assert after == pytest.approx(before, rel=1e-4)
    assert resumed["metrics"] == pytest.approx(full["metrics"], rel=1e-4)


@pytest.mark.slow
def test_diverging_loss_stops_with_a_clear_error(tiny_vit, dataset_dir_factory, tmp_path):
    with pytest.raises(UserError, match=r"training diverged: the loss became (nan|inf).*Lower --lr \(now 1e\+09\)"):
        train(config_for(dataset_dir_factory(task="multi_label"), tiny_vit, tmp_path / "run", epochs=1, lr=1e9))
    assert not (tmp_path / "run" / "model").exists()
    assert not list((tmp_path / "run" / "checkpoints").glob("checkpoint-*"))


def test_image_size_mismatch_is_refused(tiny_vit, dataset_dir_factory, tmp_path):
    data = dataset_dir_factory(task="multi_label", image_size=16)
    with pytest.raises(UserError, match="holds 16px images but .* expects 32px: prepare the data again with `--image-size 32`"):
        train(config_for(data, tiny_vit, tmp_path / "run"))


def test_resume_without_checkpoint_and_pos_weight_on_wrong_task(tiny_vit, dataset_dir_factory, tmp_path):
    data = dataset_dir_factory(task="single_label")
    with pytest.raises(UserError, match="holds no checkpoint; drop --resume"):
        train(config_for(data, tiny_vit, tmp_path / "run", resume=True))
    with pytest.raises(UserError, match="--pos-weight auto balances rare labels of a multi_label dataset"):
        train(config_for(data, tiny_vit, tmp_path / "run2", pos_weight="auto"))


def test_auto_pos_weight_is_neg_over_pos():
    split = datasets.Dataset.from_dict({"labels": [[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]})
    assert train_module.auto_pos_weight(split).tolist() == [1.0, 1.0]
    split = datasets.Dataset.from_dict({"labels": [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]})
    assert train_module.auto_pos_weight(split).tolist() == [3.0, 3.0]


def test_cli_missing_dataset_is_one_line_exit_2(tiny_vit, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "train", "--data", tmp_path / "none", "--model", tiny_vit, "--out", tmp_path / "r")
    assert code == 2
    assert err.strip().splitlines() == [f"error: {tmp_path / 'none'} is not a prepared dataset (no dataset.json): "
                                        "run `vitune data prepare SOURCE --out DATASET_DIR` first"]


@pytest.mark.slow
def test_cli_config_file_reproduces_the_run(tiny_vit, dataset_dir_factory, tmp_path, monkeypatch, capsys):
    data = dataset_dir_factory(task="multi_label")
    code, out, _ = run_cli(monkeypatch, capsys, "train", "--data", data, "--model", tiny_vit, "--out", tmp_path / "a",
                           "--epochs", 2, "--batch-size", 8, "--lr", 1e-3, "--augment", "light")
    assert code == 0 and "validation roc_auc_macro" in out
    code, _, _ = run_cli(monkeypatch, capsys, "train", "--config", tmp_path / "a" / "config.yaml", "--out", tmp_path / "b")
    assert code == 0
    first, again = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in "ab")
    assert again["metrics"] == pytest.approx(first["metrics"], rel=1e-5)
    for before, after in zip(first["history"], again["history"], strict=True):
        assert after == pytest.approx(before, rel=1e-5)
    saved = TrainConfig.from_yaml(tmp_path / "b" / "config.yaml")
    assert saved == TrainConfig.from_yaml(tmp_path / "a" / "config.yaml", out=str(tmp_path / "b"))


def test_a_second_trainer_into_the_same_run_dir_is_refused(tiny_vit, dataset_dir_factory, tmp_path):
    from vitune.storage.lock import OutputLock

    data = dataset_dir_factory(task="multi_label", sizes={"train": 8, "validation": 8})
    with OutputLock(tmp_path / "run"):
        with pytest.raises(UserError, match="is being written by another vitune process"):
            train(config_for(data, tiny_vit, tmp_path / "run", epochs=1))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_half_written_checkpoints_are_never_resumed_and_a_full_disk_keeps_the_last(
        tiny_vit, dataset_dir_factory, tmp_path, monkeypatch):
    import errno

    from vitune.training.trainer import VituneTrainer

    data = dataset_dir_factory(task="multi_label")
    run = tmp_path / "run"
    saves = []
    real = VituneTrainer._save_optimizer_and_scheduler

    def fill_the_disk_on_the_second_save(self, output_dir):
        saves.append(output_dir)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, output_dir)

    monkeypatch.setattr(VituneTrainer, "_save_optimizer_and_scheduler", fill_the_disk_on_the_second_save)
    with pytest.raises(UserError, match=r"the disk is full while training into .*; the checkpoints saved before are whole \(continue with --resume\)"):
        train(config_for(data, tiny_vit, run, epochs=3, lr=1e-3))
    assert all("/.staging/" in path for path in saves)  # written under the staging name first
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-6"]  # whole, renamed into place
    assert (run / "checkpoints" / "checkpoint-6" / "optimizer.pt").is_file() and not (run / "model").exists()

    (run / "checkpoints" / ".staging" / "checkpoint-99").mkdir(parents=True)  # as a killed save leaves it
    (run / "checkpoints" / ".staging" / "checkpoint-99" / "model.safetensors").write_bytes(b"half")
    monkeypatch.setattr(VituneTrainer, "_save_optimizer_and_scheduler", real)
    resumed = train(config_for(data, tiny_vit, run, epochs=3, lr=1e-3, resume=True)).metrics
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert not (run / "checkpoints" / ".staging").exists() and (run / "model" / "model.safetensors").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".run.")]  # no lock left beside


def test_pos_weight_counts_known_cells_only():
    class Split:
        def with_format(self, *args, **kwargs):
            return {"labels": np.array([[1, 0], [0, np.nan], [np.nan, 1], [0, 0]], dtype=np.float32)}

    assert auto_pos_weight(Split()).tolist() == [2.0, 2.0]


def test_a_missing_deepspeed_file_is_said_before_any_work(tmp_path):
    config = TrainConfig(data=str(tmp_path / "none"), model="m", out=str(tmp_path / "run"), deepspeed="/nope/ds.json")
    with pytest.raises(UserError, match="--deepspeed /nope/ds.json does not exist: give zero2, zero3 or a DeepSpeed"):
        train(config)
    assert not (tmp_path / "run").exists()


def test_training_arguments_take_the_settings_through_the_one_mapping(tmp_path):
    from vitune.config import TRAINING_ARGUMENTS

    config = TrainConfig(data="d", model="m", out=str(tmp_path / "run"), epochs=2, lr=1e-3, batch_size=4, grad_accum=3,
                         warmup=0.1, scheduler="linear", weight_decay=0.05, seed=7, save_total_limit=1)
    arguments = train_module.training_arguments(config, get_task("multi_label"), None)
    for setting, field in TRAINING_ARGUMENTS.items():
        assert getattr(arguments, field) == getattr(config, setting), field
    assert arguments.per_device_eval_batch_size == 8 and arguments.max_steps == -1


@pytest.mark.slow
def test_asl_loss_trains_end_to_end_and_the_run_is_calibrated(tiny_vit, dataset_dir_factory, tmp_path):
    data = dataset_dir_factory(task="multi_label")
    result = train(config_for(data, tiny_vit, tmp_path / "run", epochs=3, lr=1e-3, loss="asl", asl_gamma_neg=2.0))
    assert result.metrics["metrics"]["roc_auc_macro"] > 0.7
    calibration = json.loads(RunDir(tmp_path / "run").calibration.read_text())
    assert len(calibration["temperature"]) == len(load_run(tmp_path / "run").labels)
    assert calibration["ece_macro_after"] <= calibration["ece_macro_before"] + 1e-9
    config = yaml.safe_load(RunDir(tmp_path / "run").config.read_text())
    assert (config["loss"], config["asl_gamma_neg"]) == ("asl", 2.0)


def test_focal_and_asl_are_refused_for_single_label(tiny_vit, tmp_path):
    data = brightness_coded_dataset(tmp_path / "data")
    with pytest.raises(UserError, match="--loss focal is for multi-label"):
        build_trainer(config_for(data, tiny_vit, tmp_path / "run", loss="focal"))
