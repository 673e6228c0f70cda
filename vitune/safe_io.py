"""Writing outputs safely: one writer per output folder, nothing half-written, nothing left behind.

- :class:`OutputLock`: an exclusive lock on ``.NAME.lock`` beside an output folder (a
  DATASET_DIR, a RUN_DIR, a heads directory). A second process aimed at the same folder is refused
  with one ``error:`` line naming the writer's pid; the lock file is removed on release, and a
  killed writer's lock is released by the kernel.
- :func:`staging_dir`: a ``.NAME.staging-PID-xxxx`` folder beside the output for work in progress,
  removed on any exit (Ctrl-C included); :func:`remove_orphans` removes those a dead process left.
- :func:`replace_dir` and :func:`write_atomic`: a finished folder or file is renamed into place, so a
  reader never sees half of one.
- :func:`disk_full`: ``ENOSPC`` turned into one ``error:`` line.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from vitune.errors import UserError

log = logging.getLogger(__name__)


def _sibling(out: Path, suffix: str) -> Path:
    return out.parent / f".{out.name}.{suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


_HELD: set[Path] = set()  # lock files this process holds (POSIX locks do not exclude the owner itself)


class OutputLock:
    """Hold the one-writer lock of output folder ``out`` (a context manager)."""

    def __init__(self, out: Path | str, flag: str = "--out"):
        self.out = Path(out).expanduser()
        self.flag = flag
        self.path = _sibling(self.out, "lock")
        self._handle = None

    def __enter__(self) -> "OutputLock":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.path.resolve() in _HELD:
            raise self._busy(os.getpid())
        while True:
            handle = open(self.path, "a+")
            try:  # a POSIX record lock: owned by this process alone, never by the decoding workers it forks
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except (BlockingIOError, PermissionError):
                handle.seek(0)
                owner = handle.read().strip() or "unknown"
                handle.close()
                raise self._busy(owner) from None
            if self._same_file(handle):
                break
            handle.close()  # the previous holder removed that lock file: lock the new one
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        _HELD.add(self.path.resolve())
        return self

    def _busy(self, owner) -> UserError:
        return UserError(f"{self.out} is being written by another vitune process (pid {owner}): wait for it to "
                         f"finish or choose another {self.flag}")

    def _same_file(self, handle) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            return False

    def __exit__(self, *exc_info) -> None:
        _HELD.discard(self.path.resolve())
        self.path.unlink(missing_ok=True)
        self._handle.close()
        self._handle = None


def remove_orphans(out: Path | str) -> list[Path]:
    """Remove the staging folders a dead process left beside ``out`` (call it holding ``out``'s lock).

    Staging folders are ``.NAME.staging-PID-xxxx``; one whose PID still runs is kept. vitune 0.1's
    ``.NAME.xxxxxxxx`` folders carry no pid: the lock proves their writer is gone.
    """
    out = Path(out)
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(staging-(\d+)-[\w]+|[a-z0-9_]{{8}})$")
    removed = []
    for entry in out.parent.iterdir() if out.parent.is_dir() else ():
        match = pattern.match(entry.name)
        if not match or not entry.is_dir() or (match.group(2) and _alive_other(int(match.group(2)))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
        log.info("removed %s, left by a process that was killed", entry)
    return removed


def _alive_other(pid: int) -> bool:
    return pid != os.getpid() and _pid_alive(pid)


@contextmanager
def staging_dir(out: Path | str) -> Iterator[Path]:
    """A fresh ``.NAME.staging-PID-xxxx`` folder beside ``out``, removed however the block ends."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-{os.getpid()}-", dir=out.parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def replace_dir(new: Path | str, out: Path | str) -> None:
    """Put the finished folder ``new`` at ``out`` (same file system), replacing what was there."""
    new, out = Path(new), Path(out)
    if out.exists():
        previous = new.parent / f".{out.name}.previous"
        os.replace(out, previous)
        os.replace(new, out)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        os.replace(new, out)


def write_atomic(path: Path | str, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


DISK_FULL_TEXTS = ("No space left on device", "StorageFull")  # OSError, safetensors' Rust IoError


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it wraps) says the disk is full."""
    while exc is not None:
        if getattr(exc, "errno", None) == errno.ENOSPC or any(text in str(exc) for text in DISK_FULL_TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextmanager
def disk_full(what: str, kept: str) -> Iterator[None]:
    """Turn a full disk inside the block into one :class:`UserError` saying what was kept."""
    try:
        yield
    except Exception as exc:  # torch, Arrow and safetensors each wrap the OS error in their own type
        if not is_disk_full(exc):
            raise
        raise UserError(f"the disk is full while {what}; {kept}: free some space and run again") from exc
