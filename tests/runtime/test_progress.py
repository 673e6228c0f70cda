"""Progress display: bars only on a terminal; in a log, one line per epoch and stage, no bar fragments."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from vitune.runtime import progress as progress_module
from vitune.runtime.progress import progress, quiet_library_bars


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_items_pass_through_without_a_bar(monkeypatch, capsys):
    assert not progress_module.interactive()  # pytest captures both streams
    assert list(progress(iter(range(5)), total=5, desc="x")) == [0, 1, 2, 3, 4]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_on_a_terminal_a_bar_is_drawn(monkeypatch):
    out, err = _Terminal(), _Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    assert progress_module.interactive()
    assert list(progress(range(3), total=3, desc="scoring")) == [0, 1, 2]
    assert "scoring" in err.getvalue() and "0/3" in err.getvalue()


def test_library_bars_are_switched_off_only_off_a_terminal(monkeypatch):
    for name in progress_module.LIBRARY_SWITCHES:
        monkeypatch.setenv(name, "unset")  # so that the teardown restores the variable's absence
        monkeypatch.delenv(name)
    monkeypatch.setattr("datasets.disable_progress_bars", lambda: None)  # this process keeps its bars setting
    quiet_library_bars()
    assert all(os.environ[name] == "1" for name in progress_module.LIBRARY_SWITCHES)
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "0")  # the user's own choice wins
    quiet_library_bars()
    assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "0"


@pytest.mark.slow
def test_commands_in_a_log_print_lines_not_bars(tiny_vit, dataset_dir_factory, tmp_path):
    """`vitune train` / `heads` / `evaluate` with output to a pipe (as `make demo > log`, CI, nohup)."""
    data = dataset_dir_factory(task="multi_label")
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in progress_module.LIBRARY_SWITCHES}
    env["OMP_NUM_THREADS"] = "1"

    def vitune(*args) -> str:
        done = subprocess.run([sys.executable, "-m", "vitune", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout + done.stderr

    logs = [vitune("train", "--data", data, "--model", tiny_vit, "--out", run, "--epochs", 2, "--batch-size", 8),
            vitune("heads", "--model", run, "--data", data, "--heads", "logreg,mlp"),
            vitune("evaluate", run, "--bootstrap", 20)]
    for log in logs:
        assert "\r" not in log and "it/s]" not in log and "%|" not in log, log[-2000:]
    epochs = [line for line in logs[0].splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert "validation loss" in epochs[0] and "roc_auc_macro" in epochs[0]
    assert len(logs[0].splitlines()) < 30  # no per-step log dicts either
