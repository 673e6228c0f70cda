"""Image files given on the command line: folders expanded in order, each file decoded or skipped with its reason.

``predict``, ``explain`` and ``serve`` all take their inputs through here, so they accept and reject the same files.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from vitune.data.images import BadImage, decode_image
from vitune.data.sources.base import Skipped
from vitune.data.sources.files import is_hidden, is_image_file
from vitune.errors import UserError
from vitune.runtime.progress import progress


def expand_inputs(inputs: Iterable[Path | str]) -> tuple[list[Path], list[Skipped]]:
    """Files to predict, in order: given files as they are, folders' image files recursively (sorted).

    Files inside folders without an image suffix are returned as skipped; a missing path is an error.
    """
    files: list[Path] = []
    skipped: list[Skipped] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            for found in _walk(path):
                if is_image_file(found):
                    files.append(found)
                else:
                    skipped.append(Skipped(str(found), f"not an image file ({found.suffix or 'no suffix'})"))
        else:
            raise UserError(f"{path} does not exist: give image files or folders of images")
    return files, skipped


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        for name in sorted(names):
            if not is_hidden(name):
                yield Path(root) / name


PREFETCH_BATCHES = 2  # batches decoded ahead of the one being scored


def _decode_file(path: Path, image_size: int) -> np.ndarray | Skipped:
    """One file's pixels, or why it was skipped."""
    try:
        return decode_image(path, image_size)
    except BadImage as exc:
        return Skipped(str(path), exc.reason)
    except OSError as exc:
        return Skipped(str(path), f"unreadable file: {exc.strerror or exc}")


def decoded_batches(
    files: list[Path], image_size: int, batch_size: int, skipped: list[Skipped], prefetch: int = PREFETCH_BATCHES,
) -> Iterator[tuple[list[str], np.ndarray]]:
    """``(files, uint8 [B, 3, S, S])`` batches of the files that decode, in order; the others go to ``skipped``.

    Up to ``prefetch`` batches are decoded ahead in a thread pool of ``prefetch`` threads while the
    caller scores the current one (Pillow releases the GIL while it decodes and resizes), so decoding
    overlaps inference; the queue of pending batches is bounded, so memory stays flat. Each file is
    its own task, so all threads work on the first batch together rather than one thread per batch.
    ``prefetch=0`` decodes each batch when it is asked for.
    """
    chunks = [files[start : start + batch_size] for start in range(0, len(files), batch_size)]
    with ThreadPoolExecutor(max_workers=max(prefetch, 1), thread_name_prefix="vitune-decode") as pool:
        pending: deque[list[tuple[Path, Future]]] = deque()
        upcoming = iter(chunks)
        for _ in progress(range(len(chunks)), total=len(chunks), desc="predicting", unit="batch"):
            while len(pending) <= prefetch:
                chunk = next(upcoming, None)
                if chunk is None:
                    break
                pending.append([(path, pool.submit(_decode_file, path, image_size)) for path in chunk])
            names, arrays = [], []
            for path, decoding in pending.popleft():
                decoded = decoding.result()
                if isinstance(decoded, Skipped):
                    skipped.append(decoded)
                else:
                    names.append(str(path))
                    arrays.append(decoded)
            if arrays:
                yield names, np.stack(arrays)
