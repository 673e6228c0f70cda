"""Nothing half-written, nothing left behind: atomic files, staging folders, a full disk in one line.

- :func:`atomic_file` (and :func:`write_atomic` for bytes or text at hand): every file vitune writes
  to its final place goes through a temporary sibling renamed over it, so a reader never sees half
  of one and a failed or interrupted write keeps the old content.
- :func:`staging_dir`: a ``.NAME.staging-PID-xxxx`` folder beside an output folder for work in
  progress, removed on any exit (Ctrl-C included); :func:`replace_dir` renames the finished folder
  into place; :func:`remove_orphans` and :func:`remove_stale_temp_files` remove what a killed
  process left.
- :func:`disk_full`: ``ENOSPC`` turned into one ``error:`` line.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from vitune.errors import UserError

log = logging.getLogger(__name__)

TEMP_FILE = re.compile(r"^\..+\.tmp-(\d+)$")  # what atomic_file writes first: .NAME.tmp-PID


def temp_path(path: Path) -> Path:
    """The temporary sibling :func:`atomic_file` writes ``path`` through: ``.NAME.tmp-PID``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


# Written here rather than taken from atomicwrites (archived by its author, unmaintained) or safer: neither
# names its temporary file with the writer's pid, which remove_stale_temp_files needs to tell a dead writer's
# leftovers from a live one's.
@contextmanager
def atomic_file(path: Path | str, mode: str = "wb", **open_options) -> Iterator[IO]:
    """A handle on a temporary sibling of ``path`` that takes ``path``'s place when the block ends.

    ``mode`` and ``open_options`` (``encoding``, ``newline``) are :func:`open`'s, for writing. When
    the block ends normally the file is flushed, synced to disk and renamed over ``path``; when it
    raises (a full disk, Ctrl-C) the temporary file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, mode, **open_options) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path | str, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`atomic_file`; return ``path``."""
    with atomic_file(path) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _alive_other(pid: int) -> bool:
    return pid != os.getpid() and _pid_alive(pid)


def remove_stale_temp_files(folder: Path | str) -> None:
    """Remove the temporary files of :func:`atomic_file` that a killed process left in ``folder``."""
    folder = Path(folder)
    for entry in folder.iterdir() if folder.is_dir() else ():
        match = TEMP_FILE.match(entry.name)
        if match and entry.is_file() and not _alive_other(int(match.group(1))):
            entry.unlink(missing_ok=True)


PREVIOUS = "previous"  # inside a staging folder: the output being replaced, during the swap
V01_STAGING_FILES = {"train.arrow", "validation.arrow", "test.arrow"}  # all a vitune 0.1 staging folder held


def _staging_prefix(out: Path) -> str:
    return f".{out.name}.staging-{os.getpid()}-"


def remove_orphans(out: Path | str) -> list[Path]:
    """Remove the staging folders a dead process left beside ``out`` (call it holding ``out``'s lock).

    Staging folders are ``.NAME.staging-PID-xxxx``; one whose PID still runs is kept. If the process
    died in the middle of a swap, ``out`` is put back from it first. vitune 0.1's ``.NAME.xxxxxxxx``
    folders carry no pid: the lock proves their writer gone, and only one holding nothing but split
    Arrow files is taken for one.
    """
    out = Path(out)
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(staging-(\d+)-[\w]+|[a-z0-9_]{{8}})$")
    removed = []
    for entry in sorted(out.parent.iterdir()) if out.parent.is_dir() else ():
        match = pattern.match(entry.name)
        if not match or not entry.is_dir() or not _orphaned(entry, match.group(2)):
            continue
        if (entry / PREVIOUS).is_dir() and not out.exists():
            os.replace(entry / PREVIOUS, out)
            log.info("put %s back: its writer was killed while replacing it", out)
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
        log.info("removed %s, left by a process that was killed", entry)
    return removed


def _orphaned(entry: Path, pid: str | None) -> bool:
    if pid is not None:
        return not _alive_other(int(pid))
    return {p.name for p in entry.iterdir()} <= V01_STAGING_FILES


@contextmanager
def staging_dir(out: Path | str) -> Iterator[Path]:
    """A fresh ``.NAME.staging-PID-xxxx`` folder beside ``out``, removed however the block ends."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=_staging_prefix(out), dir=out.parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and ``kill`` wait until the block ends (two renames must not be split by them)."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def replace_dir(new: Path | str, out: Path | str) -> None:
    """Put the finished folder ``new`` at ``out`` (same file system), replacing what was there.

    The old ``out`` waits in a staging folder of its own between the two renames, so a process
    killed right there is undone by the next :func:`remove_orphans`.
    """
    new, out = Path(new), Path(out)
    if not out.exists():
        os.replace(new, out)
        return
    holder = Path(tempfile.mkdtemp(prefix=_staging_prefix(out), dir=out.parent))
    with _signals_held():
        os.replace(out, holder / PREVIOUS)
        os.replace(new, out)
    shutil.rmtree(holder, ignore_errors=True)


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
