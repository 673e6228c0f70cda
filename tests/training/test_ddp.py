"""`torchrun --nproc_per_node 2 -m vitune train` on CPU (gloo): one RUN_DIR, complete, written once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_two_process_cpu_training(tiny_vit, dataset_dir_factory, tmp_path):
    data = dataset_dir_factory(task="multi_label", sizes={"train": 40, "validation": 23})
    run = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", "2", "-m", "vitune", "train", "--data", str(data),
               "--model", str(tiny_vit), "--out", str(run), "--epochs", "2", "--batch-size", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(f"{run}: validation roc_auc_macro") == 1  # only the main process reports

    doc = json.loads((run / "metrics.json").read_text())
    assert doc["num_samples"] == 23  # gathered from both ranks without the padding duplicates
    assert [h["epoch"] for h in doc["history"]] == [1, 2]
    assert not (run / "predictions").exists()
    assert {p.name for p in (run / "plots").iterdir()} == {"loss.png", "lr.png", "roc.png"}
    # 40 images, 2 ranks x 4 per step -> 5 steps an epoch, so each checkpoint sits at a multiple of 5
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-10", "checkpoint-5"]
