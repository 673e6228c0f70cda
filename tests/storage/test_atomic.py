"""Atomic files, staging folders and the full disk: a failed, interrupted or killed write leaves the old content."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vitune.errors import UserError
from vitune.storage.atomic import (
    atomic_file,
    disk_full,
    remove_orphans,
    remove_stale_temp_files,
    replace_dir,
    staging_dir,
    temp_path,
    write_atomic,
)
from vitune.storage.lock import OutputLock

OLD = '{"version": "old"}\n'


def dead_pid() -> int:
    """The pid of a process that has exited."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def writer_process(target: Path, handler: str) -> subprocess.Popen:
    """A process that writes half of ``target`` through atomic_file, says so, and waits for a signal."""
    code = (
        "import signal, sys, time\n"
        "from vitune.runtime.signals import request_stop\n"
        "from vitune.storage.atomic import atomic_file\n"
        f"{handler}\n"
        f"with atomic_file({str(target)!r}, 'w') as handle:\n"
        "    handle.write('half of the new')\n"
        "    handle.flush()\n"
        "    print('writing', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_atomic_file_replaces_the_old_content_whole(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text(OLD)
    with atomic_file(target, "w") as handle:
        handle.write('{"version": ')
        assert target.read_text() == OLD  # readers see the old file until the block ends
        assert temp_path(target).name == f".metrics.json.tmp-{os.getpid()}"
        handle.write('"new"}\n')
    assert target.read_text() == '{"version": "new"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_failing_write_keeps_the_old_content_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text(OLD)
    with pytest.raises(OSError, match="No space left on device"):
        with atomic_file(target, "w") as handle:
            handle.write("half of the new")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_failing_first_write_leaves_nothing(tmp_path):
    target = tmp_path / "new" / "preds.csv"
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(target, "w", newline="") as handle:
            handle.write("file,a\r\n")
            raise KeyboardInterrupt
    assert list((tmp_path / "new").iterdir()) == []  # the folder was made for it, the file never appeared


def test_write_atomic_takes_text_as_utf8_and_bytes_as_they_are(tmp_path):
    assert write_atomic(tmp_path / "a.txt", "naïve <b>\n") == tmp_path / "a.txt"
    assert (tmp_path / "a.txt").read_bytes() == "naïve <b>\n".encode()
    write_atomic(tmp_path / "a.bin", b"\x00\xff")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\xff"


def test_an_interrupted_writer_process_leaves_the_old_content_and_no_temp_file(tmp_path):
    target = tmp_path / "report.html"
    target.write_text(OLD)
    writer = writer_process(target, "signal.signal(signal.SIGTERM, request_stop)")  # as the CLI installs it
    try:
        assert writer.stdout.readline().strip() == "writing"
        assert (tmp_path / f".report.html.tmp-{writer.pid}").read_text() == "half of the new"
        writer.send_signal(signal.SIGTERM)
        _, err = writer.communicate(timeout=60)
    finally:
        writer.kill()
    assert writer.returncode != 0 and "KeyboardInterrupt" in err
    assert target.read_text() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_a_killed_writer_process_leaves_the_old_content_and_its_temp_file_is_removed_next_time(tmp_path):
    target = tmp_path / "report.html"
    target.write_text(OLD)
    writer = writer_process(target, "")
    try:
        assert writer.stdout.readline().strip() == "writing"
        writer.kill()
        writer.wait(timeout=60)
    finally:
        writer.kill()
    left = tmp_path / f".report.html.tmp-{writer.pid}"
    assert target.read_text() == OLD and left.read_text() == "half of the new"  # kill -9 runs no clean-up
    remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    stale, live, other = (tmp_path / f".metrics.json.tmp-{dead_pid()}", tmp_path / f".x.tmp-{sleeper.pid}",
                          tmp_path / "metrics.json")
    for path in (stale, live, other):
        path.write_text("{}")
    try:
        remove_stale_temp_files(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not stale.exists() and live.exists() and other.exists()


def test_orphans_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    out = tmp_path / "ds"
    orphan = tmp_path / f".ds.staging-{dead_pid()}-abc123"
    old_style = tmp_path / ".ds.k2j4h5g6"  # vitune 0.1's staging name, no pid, split Arrow files only
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    live = tmp_path / f".ds.staging-{sleeper.pid}-xyz789"
    unrelated = tmp_path / ".ds.notes"
    users_own = tmp_path / ".ds.backup01"  # 8 characters like 0.1's names, but not a staging folder
    for folder in (orphan, live, unrelated):
        (folder / "arrow").mkdir(parents=True)
    old_style.mkdir()
    (old_style / "train.arrow").write_bytes(b"x")
    users_own.mkdir()
    (users_own / "notes.txt").write_text("mine")
    try:
        with OutputLock(out):
            removed = remove_orphans(out)
        assert sorted(removed) == sorted([orphan, old_style])
        assert live.is_dir() and unrelated.is_dir() and users_own.is_dir() and not (tmp_path / ".ds.lock").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_replace_dir_swaps_a_finished_folder_in_whole(tmp_path):
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "model" / "old.bin").write_text("old")
    with staging_dir(out) as staging:
        assert staging.name.startswith(f".run.staging-{os.getpid()}-")
        (staging / "new").mkdir()
        (staging / "new" / "new.bin").write_text("new")
        replace_dir(staging / "new", out)
    assert sorted(p.name for p in out.iterdir()) == ["new.bin"] and (out / "new.bin").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder, no swap holder


def test_disk_full_is_one_user_error_and_other_errors_pass(tmp_path):
    with pytest.raises(UserError, match=r"^the disk is full while writing x; x is unchanged: free some space and run "
                                        "again$"):
        with disk_full("writing x", "x is unchanged"):
            raise RuntimeError("wrapped") from OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(PermissionError):
        with disk_full("writing x", "x is unchanged"):
            raise PermissionError(errno.EACCES, "Permission denied")
