"""The one-writer lock on top of filelock: a second writer, in another process or this one, is refused at once."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vitune.storage.lock as lock_module
from vitune.errors import UserError
from vitune.storage.lock import OutputLock, lock_path


def refusal(out: Path, pid: int | str) -> str:
    return (f"{out} is being written by another vitune process (pid {pid}): wait for it to finish or choose "
            "another --out")


def holder_process(out: Path, fork_a_child: bool = False) -> subprocess.Popen:
    """A process that takes ``out``'s lock, prints "held" (and its child's pid), then holds it until told.

    The forked child (a decoding worker) prints "worker" once it runs: filelock closes the lock's
    descriptor in a child as it starts, so the child holds no lock from then on.
    """
    code = (
        "import os, sys\n"
        "from vitune.storage.lock import OutputLock\n"
        f"with OutputLock({str(out)!r}):\n"
        f"    child = os.fork() if {fork_a_child} else None\n"
        "    if child == 0:\n"
        "        sys.stdout.write('worker\\n')\n"  # one write each: the two processes share the pipe
        "        sys.stdout.flush()\n"
        "        sys.stdin.readline()\n"  # lives on until told
        "        os._exit(0)\n"
        "    sys.stdout.write(f'held {child}\\n')\n"
        "    sys.stdout.flush()\n"
        "    sys.stdin.readline()\n"
        "print('released', flush=True)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_the_lock_excludes_a_second_process_until_it_is_released(tmp_path):
    out = tmp_path / "run"
    holder = holder_process(out)
    try:
        assert holder.stdout.readline().split() == ["held", "None"]
        assert lock_path(out).read_text() == str(holder.pid)
        with pytest.raises(UserError) as refused:
            with OutputLock(out):
                pass
        assert str(refused.value) == refusal(out, holder.pid)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        assert not lock_path(out).exists()  # removed on release
        with OutputLock(out):
            assert lock_path(out).read_text() == str(os.getpid())
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_killed_holders_lock_is_free_even_while_its_forked_worker_lives(tmp_path):
    out = tmp_path / "ds"
    holder = holder_process(out, fork_a_child=True)
    child = None
    try:
        lines = sorted(holder.stdout.readline().split() for _ in range(2))  # the child's line and the holder's
        assert lines[0][0] == "held" and lines[1] == ["worker"]
        child = int(lines[0][1])
        holder.kill()  # kill -9: no clean-up runs, the lock file stays with the dead pid in it
        holder.wait()
        os.kill(child, 0)  # the forked worker still runs, holding a copy of every descriptor but the lock's
        assert lock_path(out).read_text() == str(holder.pid)
        with OutputLock(out):
            assert lock_path(out).read_text() == str(os.getpid())
        assert not lock_path(out).exists()
    finally:
        holder.kill()
        if child is not None:
            os.kill(child, 9)


def test_a_second_writer_in_this_process_is_refused_and_the_first_keeps_the_lock(tmp_path):
    out = tmp_path / "heads"
    with OutputLock(out, flag="--out"):
        with pytest.raises(UserError, match=f"^{re.escape(refusal(out, os.getpid()))}$"):
            with OutputLock(out):
                pass
        assert lock_path(out).read_text() == str(os.getpid())
    assert not lock_path(out).exists()
    with OutputLock(out):  # free again
        pass


def test_a_file_system_without_locks_is_one_line(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(UserError, match=r"^cannot lock .*/run: its file system has no locks; choose another --run-dir "
                                        "on a local disk$"):
        with OutputLock(tmp_path / "run", flag="--run-dir"):
            pass


def test_a_full_disk_while_locking_is_one_line_and_holds_nothing(tmp_path, monkeypatch):
    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lock_module, "_write_pid", disk_full)
    with pytest.raises(UserError, match=r"^the disk is full: cannot even lock .*/run; free some space and run again$"):
        with OutputLock(tmp_path / "run"):
            pass
    monkeypatch.undo()
    with OutputLock(tmp_path / "run"):  # the failed acquire was rolled back
        pass
