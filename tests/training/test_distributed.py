"""One run whatever the engine: DDP, DeepSpeed ZeRO-2 and ZeRO-3, FSDP, on two CPU processes over gloo.

The engines' settings are checked first, without a launch. The runs are real launches: ``torchrun -m vitune train`` on two processes, two torchrun "nodes" joined
by a c10d rendezvous on 127.0.0.1 (``--nnodes 2 --nproc-per-node 1``), and, for ``--resume``, a first
launch cut short after its first epoch (``tests/interrupted_train.py``) continued by a second. Every
launch starts two Python processes whose imports cost far more than the ten training steps, so each
run is made once per module and read by the tests that need it: the RUN_DIR it writes, its engine's own checkpoint files (proof that
the engine ran, not DDP under its name), `vitune evaluate`, `vitune predict`, ``pipeline()``, and
losses and final weights that agree with one process training on the same global batch.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import write_dataset_dir
from PIL import Image
from safetensors.torch import load_file
from tiny_run import run_cli

from vitune.config import TrainConfig
from vitune.errors import UserError
from vitune.models.families import SWIN, TIMM_WRAPPER
from vitune.tasks import get_task
from vitune.training.distributed import (
    DEEPSPEED_ACCELERATOR,
    GATHER_ON_SAVE,
    deepspeed_settings,
    fsdp_settings,
    use_cpu_accelerator_without_gpu,
)
from vitune.training.fine_tune import train, training_arguments

TESTS = Path(__file__).resolve().parents[1]
PER_PROCESS_BATCH = 4
# Two processes x 4 images = one process x 8: the same 8 images make each optimizer step (accelerate
# deals a sampler's batches of 4 out to the ranks in turn), so the runs may differ only by the order of
# float32 sums in the gradient all-reduce. Measured: at most 4e-7 on the weights and 1.2e-7 on the losses.
TOLERANCE = 1e-5
SETTINGS = ["--epochs", "2", "--lr", "1e-3", "--logging-steps", "1"]
TRAIN_IMAGES, VALIDATION_IMAGES, TEST_IMAGES = 40, 23, 12  # 5 steps an epoch; an odd split pads the last batch
LAUNCH_TIMEOUT = 480


def needs_deepspeed():
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install 'vitune[deepspeed]')")


def settings_for(tmp_path, **engine) -> TrainConfig:
    return TrainConfig(data="d", model="m", out=str(tmp_path / "run"), **engine)


def test_the_shipped_zero_configs_leave_batch_precision_and_optimizer_to_the_trainer(tmp_path):
    needs_deepspeed()
    for preset, stage in (("zero2", 2), ("zero3", 3)):
        settings = deepspeed_settings(settings_for(tmp_path, deepspeed=preset))
        assert settings["zero_optimization"]["stage"] == stage
        for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                    "gradient_clipping"):
            assert settings[key] == "auto", key
        assert settings["bf16"] == settings["fp16"] == {"enabled": "auto"}
        assert "optimizer" not in settings and "scheduler" not in settings  # the Trainer's AdamW and its groups
    assert settings["zero_optimization"][GATHER_ON_SAVE] is True


def test_any_zero3_config_is_made_to_gather_full_weights_on_save(tmp_path):
    needs_deepspeed()
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 3, GATHER_ON_SAVE: False}, "train_batch_size": "auto"}))
    settings = deepspeed_settings(settings_for(tmp_path, deepspeed=str(path)))
    assert settings == {"zero_optimization": {"stage": 3, GATHER_ON_SAVE: True}, "train_batch_size": "auto"}
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    assert deepspeed_settings(settings_for(tmp_path, deepspeed=str(path))) == {"zero_optimization": {"stage": 2}}


def test_a_deepspeed_config_that_cannot_be_used_is_a_user_error(tmp_path, monkeypatch):
    needs_deepspeed()
    path = tmp_path / "ds.json"
    with pytest.raises(UserError, match=f"--deepspeed {path} does not exist: give zero2, zero3 or a DeepSpeed JSON"):
        deepspeed_settings(settings_for(tmp_path, deepspeed=str(path)))
    path.write_text("{stage: 3")
    with pytest.raises(UserError, match=f"--deepspeed {path} is not valid JSON: Expecting property name"):
        deepspeed_settings(settings_for(tmp_path, deepspeed=str(path)))
    path.write_text("[2]")
    with pytest.raises(UserError, match="must hold a JSON object of DeepSpeed settings"):
        deepspeed_settings(settings_for(tmp_path, deepspeed=str(path)))
    with pytest.raises(UserError, match="--lora trains adapters .* which ZeRO-3 partitions: use --deepspeed zero2"):
        deepspeed_settings(settings_for(tmp_path, deepspeed="zero3", lora=8))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"--deepspeed needs DeepSpeed: pip install 'vitune\[deepspeed\]'"):
        deepspeed_settings(settings_for(tmp_path, deepspeed="zero2"))


def test_fsdp_wraps_each_encoder_layer_of_the_family_and_saves_whole_weights():
    assert fsdp_settings("full_shard", SWIN) == {
        "version": 2, "reshard_after_forward": True, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": ["SwinLayer"], "state_dict_type": "FULL_STATE_DICT"}
    with pytest.raises(UserError, match="--fsdp wraps each encoder layer of the model, which vitune knows for vit, vit_mean_pool, "
                                        "deit, .* not 'timm_wrapper': use --deepspeed or DDP"):
        fsdp_settings("full_shard", TIMM_WRAPPER)


def test_the_trainer_gets_the_engine_with_the_rest_of_its_arguments(tmp_path):
    from transformers import ViTConfig, ViTMAEConfig

    # an MAE checkpoint fine-tunes as a ViT classifier: its ViT layers are wrapped
    arguments = training_arguments(settings_for(tmp_path, fsdp="shard_grad_op"), get_task("multi_label"),
                                   ViTMAEConfig())
    plugin = arguments.fsdp_plugin_args
    assert (plugin["fsdp_version"], plugin["reshard_after_forward"]) == (2, False)
    assert (plugin["transformer_cls_names_to_wrap"], plugin["state_dict_type"]) == ("ViTLayer", "FULL_STATE_DICT")
    assert training_arguments(settings_for(tmp_path), get_task("multi_label"), ViTConfig()).fsdp_plugin_args is None


def test_deepspeed_is_pointed_at_its_cpu_accelerator_only_without_a_gpu(monkeypatch):
    monkeypatch.delenv(DEEPSPEED_ACCELERATOR, raising=False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    use_cpu_accelerator_without_gpu()
    assert DEEPSPEED_ACCELERATOR not in os.environ
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    use_cpu_accelerator_without_gpu()
    assert os.environ[DEEPSPEED_ACCELERATOR] == "cpu"
    monkeypatch.setenv(DEEPSPEED_ACCELERATOR, "xpu")  # the user's choice is kept
    use_cpu_accelerator_without_gpu()
    assert os.environ[DEEPSPEED_ACCELERATOR] == "xpu"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The one DATASET_DIR of every run (read-only, as a shared filesystem would hold it)."""
    sizes = {"train": TRAIN_IMAGES, "validation": VALIDATION_IMAGES, "test": TEST_IMAGES}
    return write_dataset_dir(tmp_path_factory.mktemp("distributed") / "data", task="multi_label", sizes=sizes)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def launch_environment() -> dict[str, str]:
    """One thread per process (two processes share this machine's cores) and no GPU."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def torchrun() -> str:
    return str(Path(sys.executable).with_name("torchrun"))


def train_arguments(data: Path, model: Path, out: Path, *engine: str) -> list[str]:
    return ["--data", str(data), "--model", str(model), "--out", str(out),
            "--batch-size", str(PER_PROCESS_BATCH), *SETTINGS, *engine]


def run_two_processes(program: list[str], arguments: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 PROGRAM ARGUMENTS`` on this machine; its output for the asserts."""
    command = [torchrun(), "--nproc-per-node", "2", *program, *arguments]
    done = subprocess.run(command, capture_output=True, text=True, env=launch_environment(), timeout=LAUNCH_TIMEOUT)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_two_nodes(program: list[str], arguments: list[str], name: str) -> list[str]:
    """Two torchrun "nodes" of one process each, joined by c10d rendezvous on 127.0.0.1; their stdouts."""
    command = [torchrun(), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", name, *program, *arguments]
    nodes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=launch_environment()) for _ in range(2)]
    outputs = [node.communicate(timeout=LAUNCH_TIMEOUT) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr[-4000:]
    return [stdout for stdout, _ in outputs]


VITUNE_TRAIN = ["-m", "vitune", "train"]
FIRST_EPOCH_ONLY = [str(TESTS / "interrupted_train.py")]


@pytest.fixture(scope="module")
def one_process_run(tiny_vit, data, runs) -> Path:
    """The reference: one process, the whole global batch (2 x 4 images) in each step."""
    out = runs / "one-process"
    train(TrainConfig(data=str(data), model=str(tiny_vit), out=str(out), batch_size=2 * PER_PROCESS_BATCH, epochs=2,
                      lr=1e-3, logging_steps=1))
    return out


@pytest.fixture(scope="module")
def ddp_run(tiny_vit, data, runs) -> tuple[Path, str]:
    out = runs / "ddp"
    done = run_two_processes(VITUNE_TRAIN, train_arguments(data, tiny_vit, out))
    return out, done.stdout


@pytest.fixture(scope="module")
def zero2_two_nodes_run(tiny_vit, data, runs) -> Path:
    needs_deepspeed()
    out = runs / "zero2-two-nodes"
    run_two_nodes(VITUNE_TRAIN, train_arguments(data, tiny_vit, out, "--deepspeed", "zero2"), "zero2")
    return out


@pytest.fixture(scope="module")
def fsdp_two_nodes_resumed_run(tiny_vit, data, runs) -> Path:
    """Two nodes with ``--fsdp full_shard``: the first epoch, then ``--resume`` to the end."""
    out = runs / "fsdp-two-nodes"
    arguments = train_arguments(data, tiny_vit, out, "--fsdp", "full_shard")
    run_two_nodes(FIRST_EPOCH_ONLY, arguments, "fsdp-first-epoch")
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["checkpoint-5"]
    run_two_nodes(VITUNE_TRAIN, [*arguments, "--resume"], "fsdp-resumed")
    return out


@pytest.fixture(scope="module")
def zero3_resumed_run(tiny_vit, data, runs) -> Path:
    """Two processes with ``--deepspeed zero3``: the first epoch, then ``--resume`` to the end."""
    needs_deepspeed()
    out = runs / "zero3"
    arguments = train_arguments(data, tiny_vit, out, "--deepspeed", "zero3")
    run_two_processes(FIRST_EPOCH_ONLY, arguments)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["checkpoint-5"]
    run_two_processes(VITUNE_TRAIN, [*arguments, "--resume"])
    return out


def step_losses(run: Path) -> list[float]:
    """The training loss of every step, from the last checkpoint's log (kept across --resume)."""
    last = max((run / "checkpoints").iterdir(), key=lambda path: int(path.name.split("-")[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


@pytest.mark.slow
def test_two_process_ddp_writes_one_complete_run_dir(ddp_run):
    run, stdout = ddp_run
    assert stdout.count(f"{run}: validation roc_auc_macro") == 1  # only the main process reports
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["num_samples"] == VALIDATION_IMAGES  # gathered from both ranks without the padding duplicates
    assert [h["epoch"] for h in doc["history"]] == [1, 2]
    assert not (run / "predictions").exists()
    assert {p.name for p in (run / "plots").iterdir()} == {"loss.png", "lr.png", "roc.png"}
    # 40 images, 2 ranks x 4 per step -> 5 steps an epoch, so each checkpoint sits at a multiple of 5
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-10", "checkpoint-5"]


@pytest.mark.slow
def test_two_nodes_train_with_zero2_into_a_run_dir_that_evaluate_and_predict_take(
        zero2_two_nodes_run, one_process_run, data, tmp_path, monkeypatch, capsys):
    run = zero2_two_nodes_run
    partitions = sorted(p.name for p in (run / "checkpoints" / "checkpoint-10" / "global_step10").iterdir())
    assert partitions == ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                          "zero_pp_rank_1_mp_rank_00_optim_states.pt"]  # the optimizer state, split in two
    assert_evaluate_and_predict_like_one_process(run, one_process_run, data, tmp_path, monkeypatch, capsys)


@pytest.mark.slow
def test_two_nodes_train_with_fsdp_resumed_into_a_run_dir_that_evaluate_and_predict_take(
        fsdp_two_nodes_resumed_run, one_process_run, data, tmp_path, monkeypatch, capsys):
    run = fsdp_two_nodes_resumed_run
    doc = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in doc["history"]] == [1, 2]  # the first epoch's record came back with --resume
    # accelerate's FSDP checkpoint files: FSDP sharded the run (DDP would have left none)
    assert (run / "checkpoints" / "checkpoint-10" / "pytorch_model_fsdp.bin").is_file()
    assert_evaluate_and_predict_like_one_process(run, one_process_run, data, tmp_path, monkeypatch, capsys)


@pytest.mark.slow
def test_a_resumed_zero3_run_saves_full_weights_that_pipeline_loads(zero3_resumed_run, one_process_run, data):
    from transformers import pipeline

    run = zero3_resumed_run
    partitions = sorted(p.name for p in (run / "checkpoints" / "checkpoint-10" / "global_step10").iterdir())
    assert partitions == [f"zero_pp_rank_{rank}_mp_rank_00_{kind}_states.pt"
                          for rank in (0, 1) for kind in ("model", "optim")]  # weights partitioned too
    assert {name: tuple(value.shape) for name, value in final_weights(run).items()} == {
        name: tuple(value.shape) for name, value in final_weights(one_process_run).items()}  # gathered whole
    image = dataset_test_images(data)[0]
    answers = [pipeline("image-classification", model=str(path / "model"), function_to_apply="sigmoid")(image)
               for path in (run, one_process_run)]
    scores = [{row["label"]: row["score"] for row in answer} for answer in answers]
    assert set(scores[0]) == {"a", "b", "c"}
    for label in "abc":
        assert scores[0][label] == pytest.approx(scores[1][label], abs=TOLERANCE)


ENGINES = {
    "ddp": ("ddp_run", False),
    "zero2, two nodes": ("zero2_two_nodes_run", True),
    "fsdp full_shard, two nodes, resumed": ("fsdp_two_nodes_resumed_run", False),
    "zero3, resumed": ("zero3_resumed_run", True),
}


@pytest.mark.slow
@pytest.mark.parametrize("engine", list(ENGINES))
def test_every_engine_trains_as_one_process_does(engine, request, one_process_run, tiny_vit):
    fixture, uses_deepspeed = ENGINES[engine]
    if uses_deepspeed:
        needs_deepspeed()
    run = request.getfixturevalue(fixture)
    run = run[0] if isinstance(run, tuple) else run
    reference_losses = step_losses(one_process_run)
    assert len(reference_losses) == 10
    assert step_losses(run) == pytest.approx(reference_losses, abs=TOLERANCE)

    reference, weights = final_weights(one_process_run), final_weights(run)
    assert weights.keys() == reference.keys()
    for name, value in reference.items():
        assert torch.allclose(weights[name], value, rtol=0, atol=TOLERANCE), name
    # the agreement is not that of two untrained models: training moved the weights far beyond the tolerance
    start = load_file(str(tiny_vit / "model.safetensors"))
    backbone = [name for name in start if f"vit.{name}" in reference]
    assert len(backbone) == len(start)
    moved = max((reference[f"vit.{name}"] - start[name]).abs().max().item() for name in backbone)
    assert moved > 100 * TOLERANCE


def dataset_test_images(data: Path) -> list[Image.Image]:
    """The DATASET_DIR's test images as PIL images."""
    split = datasets.load_from_disk(str(data))["test"].with_format("numpy")
    return [Image.fromarray(np.asarray(pixels, dtype=np.uint8).transpose(1, 2, 0)) for pixels in split["pixel_values"]]


def assert_evaluate_and_predict_like_one_process(run: Path, reference: Path, data: Path, tmp_path, monkeypatch,
                                                 capsys) -> None:
    """`vitune evaluate` and `vitune predict` on ``run``: they work, and say what they say of ``reference``."""
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", run, "--bootstrap", "20")
    assert code == 0, err
    evaluation = json.loads((run / "eval" / "test" / "metrics_test.json").read_text())
    assert evaluation["num_samples"] == TEST_IMAGES and "roc_auc_macro" in evaluation["metrics"]

    folder = tmp_path / "images"
    folder.mkdir()
    for number, image in enumerate(dataset_test_images(data)[:4]):
        image.save(folder / f"{number}.png")
    predictions = {}
    for name, path in (("run", run), ("reference", reference)):
        code, out, err = run_cli(monkeypatch, capsys, "predict", path, folder, "--out", tmp_path / f"{name}.csv")
        assert code == 0, err
        predictions[name] = np.loadtxt(tmp_path / f"{name}.csv", delimiter=",", skiprows=1, usecols=(1, 2, 3))
    assert predictions["run"].shape == (4, 3)
    np.testing.assert_allclose(predictions["run"], predictions["reference"], atol=TOLERANCE)
