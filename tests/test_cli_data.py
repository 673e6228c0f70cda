"""``vitune data prepare`` / ``vitune data show``: summaries, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tiny_run import run_cli


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "src"
    rng = np.random.default_rng(0)
    for label in ("ant", "bee"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    (root / "bee" / "broken.png").write_bytes(b"not a png")
    return root


def test_prepare_prints_summary_and_show_prints_tables(source, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ds"
    code, stdout, _ = run_cli(monkeypatch, capsys, "data", "prepare", str(source), "--out", str(out),
                              "--image-size", "8", "--split", "random", "--val-fraction", "0.25",
                              "--test-fraction", "0", "--seed", "7")
    assert code == 0
    saved = json.loads((out / "dataset.json").read_text())
    assert saved["splits"] == {"train": 9, "validation": 3} and saved["seed"] == 7 and saved["image_size"] == 8
    assert "train 9, validation 3" in stdout and "split random (seed 7)" in stdout
    assert "skipped 1: bee/broken.png: unreadable image" in stdout

    code, stdout, _ = run_cli(monkeypatch, capsys, "data", "show", str(out), "--out", str(tmp_path / "g.png"))
    assert code == 0 and (tmp_path / "g.png").is_file()
    assert "label frequencies" in stdout and "ant/" in stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "tiff-stack"], "tiff-stack"),
        (["--format", "csv", "--label-column", "nope"], "nope"),
        (["--val-fraction", "0.7", "--test-fraction", "0.4"], "sum below 1"),
    ],
)
def test_prepare_user_errors_are_one_line_exit_2(source, tmp_path, monkeypatch, capsys, args, message):
    csv = source / "labels.csv"
    csv.write_text("image,label\nant/0.png,ant\n")
    target = str(csv) if "csv" in args else str(source)
    code, stdout, stderr = run_cli(monkeypatch, capsys, "data", "prepare", target, "--out", str(tmp_path / "ds"), *args)
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1]
    assert "Traceback" not in stderr


def test_nonexistent_source_through_the_real_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vitune", "data", "prepare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "ds")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: SOURCE {tmp_path / 'nowhere'} does not exist: "
                                                  "pass a folder, a label CSV or hf:NAME"]
    assert not (tmp_path / "ds").exists()
