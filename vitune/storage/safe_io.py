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
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from vitune.errors import UserError

log = logging.getLogger(__name__)


_STOP = threading.Event()  # set by the CLI's Ctrl-C / kill handler
_DEFERRED = threading.Event()  # set while a loop checks for the stop itself (see deferred_interrupts)


def request_stop(signum=None, frame=None) -> None:
    """Signal handler: remember the request and raise KeyboardInterrupt where the program stands.

    Inside :func:`deferred_interrupts` it only remembers: raised in the middle of a process pool's
    machinery, KeyboardInterrupt can be swallowed or leave the pool hanging, so the loop raises it
    itself at its next item (:func:`raise_if_stopped`).
    """
    _STOP.set()
    if not _DEFERRED.is_set():
        raise KeyboardInterrupt


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Within the block, Ctrl-C and ``kill`` take effect at the next :func:`raise_if_stopped`."""
    _DEFERRED.set()
    try:
        yield
    finally:
        _DEFERRED.clear()


def clear_stop_request() -> None:
    """Forget an earlier stop request (a new command starts)."""
    _STOP.clear()


def raise_if_stopped() -> None:
    """Raise KeyboardInterrupt if a stop was requested (cheap: call it once per item of a long loop)."""
    if _STOP.is_set():
        raise KeyboardInterrupt


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
        try:
            return self._acquire()
        except OSError as exc:  # a path the system refuses keeps its own one-line report (the CLI's)
            if is_disk_full(exc):
                raise UserError(f"the disk is full: cannot even lock {self.out}; free some space and run again") from exc
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
                raise UserError(f"cannot lock {self.out}: its file system has no locks; choose another "
                                f"{self.flag} on a local disk") from exc
            raise

    def _acquire(self) -> "OutputLock":
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


PREVIOUS = "previous"  # inside a staging folder: the output being replaced, during the swap
V01_STAGING_FILES = {"train.arrow", "validation.arrow", "test.arrow"}  # all a vitune 0.1 staging folder held


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
    holder = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-{os.getpid()}-", dir=out.parent))
    with _signals_held():
        os.replace(out, holder / PREVIOUS)
        os.replace(new, out)
    shutil.rmtree(holder, ignore_errors=True)


TEMP_FILE = re.compile(r"^\..+\.tmp-(\d+)$")  # what write_atomic writes first


def remove_stale_temp_files(folder: Path | str) -> None:
    """Remove the temporary files of :func:`write_atomic` that a killed process left in ``folder``."""
    folder = Path(folder)
    for entry in folder.iterdir() if folder.is_dir() else ():
        match = TEMP_FILE.match(entry.name)
        if match and entry.is_file() and not _alive_other(int(match.group(1))):
            entry.unlink(missing_ok=True)


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
