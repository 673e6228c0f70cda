"""`data prepare` under stress: killed, interrupted, run twice at once, on a full disk."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from vitune.config import PrepareConfig
from vitune.data import prepare as prepare_config
from vitune.data.synthetic import make_chestxray_like
from vitune.errors import UserError
from vitune.safe_io import OutputLock, remove_orphans

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def prepare(source, out, **settings):
    return prepare_config(PrepareConfig(source=source, out=out, **settings))


def beside(out: Path) -> list[str]:
    """What sits beside a DATASET_DIR that is not the user's: staging folders, lock files."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_chestxray_like(tmp_path_factory.mktemp("nih") / "src", n_patients=40, image_size=48)


@pytest.fixture(scope="module")
def big_source(tmp_path_factory) -> Path:
    """Large enough that decoding lasts a few seconds: time to kill or interrupt it."""
    return make_chestxray_like(tmp_path_factory.mktemp("nih-big") / "src", n_patients=500, image_size=512)


def prepare_command(source: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "vitune", "data", "prepare", str(source), "--out", str(out), "--image-size", "32",
            "--workers", "2"]


def _default_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background job (CI, this test's runner) inherits it ignored


def start_prepare(source: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(prepare_command(source, out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_ctrl_c)


def wait_for_staging(out: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        staging = [p for p in out.parent.glob(f".{out.name}.staging-*") if (p / "arrow").is_dir()]
        if staging:
            time.sleep(0.5)  # well into decoding
            return
        time.sleep(0.05)
    raise AssertionError(f"prepare never started decoding: {process.communicate()}")


def test_orphans_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    out = tmp_path / "ds"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".ds.staging-{int(dead.stdout)}-abc123"
    old_style = tmp_path / ".ds.k2j4h5g6"  # vitune 0.1's staging name, no pid
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    live = tmp_path / f".ds.staging-{sleeper.pid}-xyz789"
    unrelated = tmp_path / ".ds.notes"
    for folder in (orphan, old_style, live, unrelated):
        (folder / "arrow").mkdir(parents=True)
    try:
        with OutputLock(out):
            removed = remove_orphans(out)
        assert sorted(removed) == sorted([orphan, old_style])
        assert live.is_dir() and unrelated.is_dir() and not (tmp_path / ".ds.lock").exists()
    finally:
        sleeper.kill()


def test_a_second_writer_is_refused_with_one_line(tmp_path, source):
    out = tmp_path / "ds"
    with OutputLock(out):
        with pytest.raises(UserError, match=rf"{out} is being written by another vitune process \(pid {os.getpid()}\): "
                                            "wait for it to finish or choose another --out"):
            prepare(source, out, image_size=16)
    assert not out.exists() and beside(out) == []


def test_a_full_disk_keeps_the_previous_dataset(tmp_path, source, monkeypatch):
    out = tmp_path / "ds"
    first = prepare(source, out, image_size=16)
    before = datasets.load_from_disk(str(out))["train"]["file"]
    from datasets.arrow_writer import ArrowWriter

    real_write, written = ArrowWriter.write, []

    def write_until_full(self, *args, **kwargs):
        if len(written) == 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(1)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(ArrowWriter, "write", write_until_full)
    with pytest.raises(UserError, match=f"the disk is full while preparing {out}; {out} is unchanged: free some space"):
        prepare(source, out, image_size=24)
    assert json.loads((out / "dataset.json").read_text())["fingerprint"] == first.fingerprint
    assert datasets.load_from_disk(str(out))["train"]["file"] == before
    assert beside(out) == []


@pytest.mark.slow
def test_after_kill_9_the_next_prepare_leaves_nothing_beside(tmp_path, big_source):
    out = tmp_path / "ds"
    process = start_prepare(big_source, out)
    wait_for_staging(out, process)
    process.kill()
    process.wait()
    assert any(name.startswith(".ds.staging-") for name in beside(out))  # what a killed prepare leaves
    done = subprocess.run(prepare_command(big_source, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert beside(out) == [] and datasets.load_from_disk(str(out))["train"].num_rows > 0


@pytest.mark.slow
def test_ctrl_c_removes_the_staging_folder_at_once(tmp_path, big_source):
    out = tmp_path / "ds"
    process = start_prepare(big_source, out)
    wait_for_staging(out, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err.strip().splitlines()[-1] == "interrupted: nothing half-written was kept"
    assert "Traceback" not in err
    assert beside(out) == [] and not out.exists()


@pytest.mark.slow
def test_two_prepares_at_once_end_with_0_or_2_and_a_whole_dataset(tmp_path, big_source):
    out = tmp_path / "ds"
    first, second = start_prepare(big_source, out), start_prepare(big_source, out)
    results = [p.communicate(timeout=300) for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes in ([0, 0], [0, 2]), results
    refused = [err for p, (_, err) in zip((first, second), results) if p.returncode == 2]
    assert all(err.strip().startswith("error:") and err.strip().count("\n") == 0 for err in refused)
    assert all("is being written by another vitune process" in err for err in refused)
    ds = datasets.load_from_disk(str(out))
    assert sum(ds[s].num_rows for s in ds) == sum(json.loads((out / "dataset.json").read_text())["splits"].values())
    assert beside(out) == []
