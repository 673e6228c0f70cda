"""One writer per output folder: :class:`OutputLock`, an exclusive ``filelock`` lock beside the folder.

The lock is ``filelock.FileLock`` (an ``flock`` on ``.NAME.lock``): the kernel releases it when its
holder dies, however it dies, and filelock closes the descriptor in forked children, so a decoding
worker never keeps the lock of a writer that was killed. vitune adds what a user needs on top: the
holder's pid written into the lock file, a second writer refused at once with one ``error:`` line
naming that pid, and the lock file removed on release.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from filelock import FileLock, Timeout

from vitune.errors import UserError
from vitune.storage.atomic import is_disk_full

NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # what flock says on a file system without locks


def lock_path(out: Path | str) -> Path:
    """The lock file of output folder ``out``: ``.NAME.lock`` beside it."""
    out = Path(out)
    return out.parent / f".{out.name}.lock"


def _write_pid(descriptor: int) -> None:
    """Record this process in the lock file it has just locked (filelock's ``on_acquired`` hook)."""
    os.ftruncate(descriptor, 0)
    os.write(descriptor, str(os.getpid()).encode())


class OutputLock:
    """Hold the one-writer lock of output folder ``out`` (a context manager).

    A second writer, in another process or in this one, is refused at once with a :class:`UserError`
    naming the holder's pid and ``flag`` (the option that chose ``out``).
    """

    def __init__(self, out: Path | str, flag: str = "--out"):
        self.out = Path(out).expanduser()
        self.flag = flag
        self.path = lock_path(self.out)
        # thread_local=False: the hold belongs to this object, whichever thread releases it
        self._lock = FileLock(self.path, blocking=False, thread_local=False, on_acquired=_write_pid)

    def __enter__(self) -> "OutputLock":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise self._busy() from None
        except OSError as exc:  # a path the system refuses keeps its own one-line report (the CLI's)
            if is_disk_full(exc):
                raise UserError(f"the disk is full: cannot even lock {self.out}; free some space and run again") from exc
            if exc.errno in NO_LOCKS:
                raise UserError(f"cannot lock {self.out}: its file system has no locks; choose another "
                                f"{self.flag} on a local disk") from exc
            raise
        return self

    def _busy(self) -> UserError:
        try:
            owner = self.path.read_text().strip() or "unknown"
        except FileNotFoundError:  # released between the refusal and this read
            owner = "unknown"
        return UserError(f"{self.out} is being written by another vitune process (pid {owner}): wait for it to "
                         f"finish or choose another {self.flag}")

    def __exit__(self, *exc_info) -> None:
        # Removed while still held: a writer that opened this file meanwhile finds it unlinked once it gets the
        # lock, and filelock then locks a fresh file. Removed after the release, it could be another holder's.
        self.path.unlink(missing_ok=True)
        self._lock.release()
