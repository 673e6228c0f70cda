"""Stopping the running process cleanly: Ctrl-C and ``kill`` turned into KeyboardInterrupt where it is safe.

The CLI installs :func:`request_stop` as the SIGINT and SIGTERM handler. Long loops call
:func:`raise_if_stopped` once per item; inside :func:`deferred_interrupts` (a process pool at work)
the handler only records the request and the loop raises it at its next item.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

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
