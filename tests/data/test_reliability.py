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
from vitune.storage.atomic import remove_orphans
from vitune.storage.lock import OutputLock

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
        if staging:  # decoding has begun: it lasts seconds for this source
            return
        time.sleep(0.05)
    raise AssertionError(f"prepare never started decoding: {process.communicate()}")


def test_a_swap_cut_short_is_undone(tmp_path, source):
    """Killed between the two renames of replace_dir: the old DATASET_DIR waits in its staging folder."""
    out = tmp_path / "ds"
    prepare(source, out, image_size=16)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    holder = tmp_path / f".ds.staging-{int(dead.stdout)}-abc123"
    holder.mkdir()
    os.replace(out, holder / "previous")
    with OutputLock(out):
        remove_orphans(out)
    assert datasets.load_from_disk(str(out))["train"].num_rows > 0 and beside(out) == []


def test_a_writer_in_another_process_is_refused_with_one_line(tmp_path, source):
    out = tmp_path / "ds"
    holder = subprocess.Popen([sys.executable, "-c", f"import time\nfrom vitune.storage.lock import OutputLock\n"
                               f"with OutputLock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = subprocess.run(prepare_command(source, out), env=ENV, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            f"error: {out} is being written by another vitune process (pid {holder.pid}): wait for it to finish "
            "or choose another --out"]
    finally:
        holder.kill()
        holder.wait()
    assert not out.exists()


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
    signalled = time.monotonic()
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - signalled < 10  # at once, not after the decoding
    assert process.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted: nothing half-written was kept", err[-3000:]
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


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (where this machine lets us mount one)."""
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_really_full_disk_is_one_line_and_keeps_the_previous_dataset(small_disk, source):
    out = small_disk / "ds"
    first = subprocess.run(prepare_command(source, out)[:-4] + ["--image-size", "16", "--workers", "1"], env=ENV,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    before = json.loads((out / "dataset.json").read_text())
    bigger = prepare_command(source, out)[:-4] + ["--image-size", "224", "--workers", "1"]  # ~6 MB of gray pixels
    done = subprocess.run(bigger, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: the disk is full while preparing {out}; {out} is unchanged: free some space and run again")
    assert json.loads((out / "dataset.json").read_text()) == before
    assert datasets.load_from_disk(str(out))["train"].features["pixel_values"].shape == (1, 16, 16)  # gray source
    assert beside(out) == []
