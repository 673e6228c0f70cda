"""Progress display: tqdm bars on a terminal or in a notebook, plain lines elsewhere.

vitune uses one progress library, tqdm (the one ``transformers.Trainer`` and ``datasets`` draw
with). When stdout or stderr is not a terminal (CI, ``nohup``, ``make demo > log``, a pipe), vitune
draws no bar: :func:`progress` passes items through silently and the stages report themselves in
one log line each (``embedded train: 2097 images in 1.9 s``), the Trainer in one line per epoch.
The CLI also turns the libraries' own bars off there (:func:`quiet_library_bars`); call it
yourself in a script whose output goes to a log.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def interactive() -> bool:
    """Whether bars can be drawn: stdout and stderr are terminals, or this is a Jupyter kernel."""
    if "ipykernel" in sys.modules:
        return True
    return all(getattr(stream, "isatty", lambda: False)() for stream in (sys.stdout, sys.stderr))


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    """``iterable`` with a transient tqdm bar on a terminal, unchanged elsewhere."""
    if not interactive():
        yield from iterable
        return
    from tqdm.auto import tqdm

    with tqdm(iterable, total=total, desc=desc, unit=unit, leave=False) as bar:
        yield from bar


LIBRARY_SWITCHES = ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS")  # datasets; transformers + hub


def quiet_library_bars() -> None:
    """Off a terminal, turn off the bars of ``datasets`` and ``transformers`` (loading, saving, mapping).

    Through their environment switches, read when they are imported (so this imports neither), and
    through their functions when they are imported already; a user's own setting wins.
    """
    if interactive():
        return
    for name in LIBRARY_SWITCHES:
        os.environ.setdefault(name, "1")
    if "datasets" in sys.modules and os.environ[LIBRARY_SWITCHES[0]] == "1":
        sys.modules["datasets"].disable_progress_bars()
    if "transformers" in sys.modules and os.environ[LIBRARY_SWITCHES[1]] == "1":
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
