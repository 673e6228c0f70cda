"""LoRA runs, --report-to (TensorBoard and MLflow for real), the model card and --push-to-hub's checks."""

from __future__ import annotations

import json
import math

import datasets
import numpy as np
import pytest
from transformers.utils import logging as hf_logging

from vitune.config import TrainConfig
from vitune.errors import UserError
from vitune.models.forward import pixel_batches
from vitune.models.run import load_run
from vitune.storage.layout import RunDir
from vitune.tasks import get_task
from vitune.training.fine_tune import train
from vitune.training.model_card import NOT_A_MEDICAL_DEVICE, check_can_push

hf_logging.disable_progress_bar()
SMALL = {"train": 16, "validation": 8}
HIDDEN, LAYERS, LABELS = 32, 2, 3  # the tiny ViT of conftest, and the default dataset's labels


def small_config(data, model, out, **kwargs) -> TrainConfig:
    """Two optimizer steps an epoch."""
    return TrainConfig(data=str(data), model=str(model), out=str(out), **{"batch_size": 8, "lr": 1e-3, **kwargs})


@pytest.mark.slow
def test_lora_run_logged_to_tensorboard_and_mlflow(tiny_vit, dataset_dir_factory, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard
    from mlflow.tracking import MlflowClient
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import ViTForImageClassification, pipeline

    data = dataset_dir_factory(sizes=SMALL)
    rank = 4
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    result = train(small_config(data, tiny_vit, tmp_path / "run", epochs=2, lora=rank, report_to="tensorboard,mlflow",
                                logging_steps=1))
    run = RunDir(tmp_path / "run")
    doc = json.loads(run.metrics.read_text())

    # LoRA A (r x in) and B (out x r) on the query and value projections of each layer, plus the full head
    adapters, head = LAYERS * 2 * 2 * rank * HIDDEN, HIDDEN * LABELS + LABELS
    plain = sum(p.numel() for p in ViTForImageClassification.from_pretrained(tiny_vit, num_labels=LABELS).parameters())
    assert doc["parameters"] == {"trainable": adapters + head, "total": plain + adapters + head}  # + the head's copy
    assert doc["parameters"]["trainable"] < 0.2 * doc["parameters"]["total"]
    adapter_config = json.loads((run.adapter / "adapter_config.json").read_text())
    assert adapter_config["r"] == rank and "classifier" in adapter_config["modules_to_save"]

    events = EventAccumulator(str(run.tensorboard))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]  # logging_steps 1, 4 steps
    assert all(math.isfinite(v) and v > 0 for v in losses)

    main = get_task("multi_label").main_metric
    client = MlflowClient(run.mlflow.as_uri())
    [logged] = client.search_runs([client.get_experiment_by_name("vitune").experiment_id])
    assert logged.info.run_name == "run" and float(logged.data.params["learning_rate"]) == 1e-3
    history = [m.value for m in client.get_metric_history(logged.info.run_id, f"eval_{main}")]
    assert len(history) == 2 and max(history) == pytest.approx(doc["metrics"][main])  # the best epoch is kept
    assert [m.value for m in client.get_metric_history(logged.info.run_id, "loss")] == pytest.approx(losses)
    assert not (tmp_path / "mlruns").exists()  # nothing in the working directory

    card = ModelCard.load(run.card)
    assert card.data.eval_results[0].metric_type == main
    assert card.data.eval_results[0].metric_value == doc["metrics"][main] == result.metrics["metrics"][main]
    assert (card.data.library_name, card.data.pipeline_tag) == ("transformers", "image-classification")
    assert "lora" in card.data.tags and NOT_A_MEDICAL_DEVICE in card.text and "| c |" in card.text
    assert f'pipeline("image-classification", model="{run.model}")' in card.text

    # model/ is the merged model: it scores the validation split as the trained adapter did
    split = datasets.load_from_disk(str(data))["validation"]
    scores = load_run(run.root, "cpu").scores(pixel_batches(split, 8))
    merged = get_task("multi_label").metrics(np.asarray(split["labels"]), scores, ["a", "b", "c"]).metrics
    assert merged[main] == pytest.approx(doc["metrics"][main], abs=1e-6)
    image = Image.fromarray(np.asarray(split[0]["pixel_values"], dtype=np.uint8).transpose(1, 2, 0))
    predicted = pipeline("image-classification", model=str(run.model), device="cpu")(image, top_k=None)
    assert sorted(p["label"] for p in predicted) == ["a", "b", "c"]
    raw = load_run(run.root, "cpu", calibrate=False).scores(pixel_batches(split.select([0]), 1))  # no temperature
    assert {p["label"]: p["score"] for p in predicted}["a"] == pytest.approx(float(raw[0, 0]), abs=1e-4)


def test_push_to_hub_offline_fails_before_training(tiny_vit, dataset_dir_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = small_config(dataset_dir_factory(sizes=SMALL), tiny_vit, tmp_path / "run", push_to_hub="me/tiny")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        train(config)
    assert not (tmp_path / "run").exists()


def test_push_to_hub_without_token_or_network_is_a_quick_error(monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(UserError, match="token"):
        check_can_push("me/tiny")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: "hf_test")
    started = time.perf_counter()
    with pytest.raises(UserError, match="cannot reach http://127.0.0.1:9"):
        check_can_push("me/tiny")
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("settings, message", [
    ({"report_to": "tensorboard,neptune"}, "--report-to 'neptune' is not supported"),
    ({"report_to": "none,mlflow"}, "give none, or one or more"),
    ({"lora": -1}, "--lora -1 is the LoRA rank"),
    ({"lora_alpha": 16.0}, "add --lora R"),
    ({"lora": 8, "lora_targets": " , "}, "--lora-targets is empty"),
    ({"push_to_hub": "a/b/c"}, "not a Hub repo id"),
])
def test_bad_tracking_lora_and_hub_settings_say_what_to_give(settings, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(data="d", model="m", out="o", **settings)


def test_a_destination_without_its_package_says_what_to_install(monkeypatch):
    import importlib.util

    from vitune.training.tracking import report_to

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real_find_spec(name, *a))
    assert report_to(TrainConfig(data="d", model="m", out="o", report_to="tensorboard, mlflow")) == ["tensorboard",
                                                                                                    "mlflow"]
    with pytest.raises(UserError, match="--report-to wandb needs the wandb package: pip install wandb"):
        report_to(TrainConfig(data="d", model="m", out="o", report_to="mlflow,wandb"))


def test_a_lora_target_the_model_lacks_is_a_user_error(dataset_dir_factory, tiny_vit, tmp_path):
    from vitune.training.fine_tune import build_trainer

    data = dataset_dir_factory(sizes=SMALL)
    with pytest.raises(UserError, match="--lora-targets nope"):
        build_trainer(small_config(data, tiny_vit, tmp_path / "run", lora=4, lora_targets="nope"))


def test_a_refused_upload_is_one_clear_error(tmp_path, monkeypatch):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from huggingface_hub import constants

    from vitune.training.model_card import push_to_hub

    class Refuse(BaseHTTPRequestHandler):
        def _refuse(self):
            body = b'{"error": "Invalid credentials in Authorization header"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_HEAD = _refuse

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setattr("huggingface_hub.get_token", lambda: "hf_test")
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "README.md").write_text("card")
        with pytest.raises(UserError, match=r"--push-to-hub me/tiny failed: .*401.*the model is saved in"):
            push_to_hub(tmp_path / "model", "me/tiny")
    finally:
        server.shutdown()
