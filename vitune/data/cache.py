"""The decoded-pixel cache: every kept image decoded once, in parallel, streamed into Arrow.

Images are decoded by a process pool over all cores (``decode_image`` is CPU bound and holds
the GIL) and each result is appended to its split's Arrow file as it arrives, so memory stays
at a few batches whatever the dataset size. The Arrow files then become the DATASET_DIR
(``DatasetDict.save_to_disk``). A fingerprint of the source listing and the options lets an
unchanged source skip all of this.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import multiprocessing.pool
import os
import signal
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from vitune.data.dataset_dir import INFO_FILE, SPLITS, UNLABELED, DatasetInfo, features_for
from vitune.data.images import BadImage, decode_image, pil_to_array
from vitune.data.sources.base import Skipped
from vitune.errors import UserError
from vitune.runtime.progress import progress
from vitune.runtime.signals import deferred_interrupts, raise_if_stopped
from vitune.runtime.version import VITUNE_VERSION

log = logging.getLogger(__name__)

DATASET_DICT_FILE = "dataset_dict.json"  # what save_to_disk writes for a DatasetDict
_WRITER_BATCH = 64  # rows buffered per split before an Arrow record batch is flushed


@dataclass
class CacheItem:
    """One record to decode: where its pixels are, and the columns written beside them."""

    file: str
    label: Any
    group: str | None
    split: str
    path: str | None = None  # the image file to decode, when ``pixels`` is None
    pixels: Any = None  # an in-memory image: PIL image, HxWx3 uint8 array or encoded bytes
    meta: dict = field(default_factory=dict)  # the metadata columns' values (sex, age, view, ...)


@dataclass
class CacheResult:
    """What the cache holds per split, and the images that could not be decoded."""

    splits: dict[str, int]
    skipped: list[Skipped] = field(default_factory=list)


def source_fingerprint(source: str, settings: dict[str, Any]) -> str:
    """Hash of the source listing (relative names, sizes, mtimes), ``settings`` and vitune's version.

    A directory source is listed whole (images and label files); a file source (a label CSV)
    is listed with its folder; any other source (``hf:NAME``) is identified by its name.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps({"vitune": VITUNE_VERSION, "source": source, "settings": settings}, sort_keys=True).encode())
    root = Path(source)
    if root.is_file():
        root = root.parent
    if root.is_dir():
        for line in _listing(root):
            digest.update(line.encode())
    return digest.hexdigest()


def _listing(root: Path) -> Iterator[str]:
    """``name\\tsize\\tmtime_ns`` for every file under ``root``, in a stable order."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue  # a dangling symlink: readers report it, it changes nothing here
            yield f"{os.path.relpath(path, root)}\t{stat.st_size}\t{stat.st_mtime_ns}\n"


def check_out_dir(out: Path, source: str) -> None:
    """Refuse an ``--out`` that would overwrite something that is not a DATASET_DIR, or sit in SOURCE."""
    source_path = Path(source)
    if source_path.exists():
        root = (source_path if source_path.is_dir() else source_path.parent).resolve()
        resolved = out.resolve()
        if resolved == root or root in resolved.parents:
            raise UserError(f"--out {out} is inside SOURCE {source}: choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: choose a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / INFO_FILE).is_file():
        raise UserError(f"--out {out} is not empty and not a prepared dataset: choose a new or empty folder")


def cached_info(out: Path, fingerprint: str) -> DatasetInfo | None:
    """The DatasetInfo of ``out`` if it is a complete DATASET_DIR built with ``fingerprint``."""
    if not (out / INFO_FILE).is_file() or not (out / DATASET_DICT_FILE).is_file():
        return None
    try:
        info = DatasetInfo.load(out)
    except (UserError, ValueError, TypeError):
        return None
    return info if info.fingerprint == fingerprint else None


def build_cache(
    items: Sequence[CacheItem],
    staging: Path,
    task: str,
    image_size: int,
    workers: int | None = None,
    metadata_columns: Sequence[str] = (),
) -> CacheResult:
    """Decode ``items`` over ``workers`` processes (default: all cores) into ``staging/dataset``.

    ``task`` may be :data:`~vitune.data.dataset_dir.UNLABELED`: the splits then have no labels column.

    That folder becomes a ``DatasetDict`` (``save_to_disk``) with one split per split name present,
    in train/validation/test order; rows keep the order of ``items``. The Arrow files written while
    decoding stay in ``staging/arrow``. Each row also holds its item's ``metadata_columns``. Undecodable images are returned as skipped with their reason.
    """
    import datasets

    workers = max(1, workers or os.cpu_count() or 1)
    ordered = sorted(items, key=lambda item: SPLITS.index(item.split))
    skipped: list[Skipped] = []
    counts = {split: 0 for split in SPLITS}
    arrow = staging / "arrow"
    arrow.mkdir(parents=True, exist_ok=True)
    writers = SplitWriters(arrow, task, image_size, metadata_columns)
    with deferred_interrupts():  # Ctrl-C stops the loop at its next image, never inside the pool's machinery
        decoded = _decode_all(ordered, image_size, workers)
        for item, (pixels, reason) in zip(ordered, progress(decoded, len(ordered), "decoding images", "image")):
            raise_if_stopped()
            if reason is not None:
                skipped.append(Skipped(item.file, reason))
                continue
            row = {"pixel_values": pixels, "file": item.file, "group": item.group, **item.meta}
            if task != UNLABELED:
                row["labels"] = item.label
            writers.write(item.split, row)
            counts[item.split] += 1
    writers.finalize()
    if not any(counts.values()):
        first = "; ".join(f"{s.file}: {s.reason}" for s in skipped[:3])
        raise UserError(f"none of the {len(ordered)} images could be decoded ({first}): check the image files")
    splits = {
        split: datasets.Dataset.from_file(str(arrow / f"{split}.arrow"))
        for split in SPLITS
        if counts[split] or split == "train"
    }
    _save_quietly(datasets.DatasetDict(splits), staging / "dataset")
    return CacheResult(splits={split: counts[split] for split in splits}, skipped=skipped)


class SplitWriters:
    """One Arrow file per split; one channel while every image so far is gray, three from the first colour one.

    A grayscale source is stored with one channel (``[1, S, S]``, a third of the bytes). At the first
    colour image the rows written so far are rewritten with three channels (once; a colour source
    usually shows one among its first images), and every later gray row is expanded.
    """

    def __init__(self, folder: Path, task: str, image_size: int, metadata_columns: Sequence[str] = ()) -> None:
        self.folder, self.task, self.image_size = folder, task, image_size
        self.metadata_columns = list(metadata_columns)
        self.channels = 1
        self.writers = self._open()

    def _path(self, split: str) -> Path:
        return self.folder / f"{split}.arrow"

    def _open(self) -> dict:
        from datasets.arrow_writer import ArrowWriter

        features = features_for(self.task, self.image_size, self.channels, self.metadata_columns)
        return {split: ArrowWriter(features=features, path=str(self._path(split)), writer_batch_size=_WRITER_BATCH)
                for split in SPLITS}

    def write(self, split: str, row: dict) -> None:
        """Append one row to ``split`` (its pixels ``[1, S, S]`` or ``[3, S, S]``)."""
        pixels = row["pixel_values"]
        if pixels.shape[0] > self.channels:
            self._to_rgb()
        if pixels.shape[0] < self.channels:
            row = {**row, "pixel_values": np.repeat(pixels, self.channels, axis=0)}
        self.writers[split].write(row)

    def _to_rgb(self) -> None:
        """Rewrite the one-channel rows written so far with three channels, and continue in three."""
        import datasets

        self.finalize()
        for split in SPLITS:
            self._path(split).rename(self.folder / f"{split}.gray.arrow")
        self.channels = 3
        self.writers = self._open()
        for split in SPLITS:
            gray_path = self.folder / f"{split}.gray.arrow"
            rows = datasets.Dataset.from_file(str(gray_path)).with_format("numpy", columns=["pixel_values"],
                                                                            dtype=np.uint8, output_all_columns=True)
            for row in rows:
                self.write(split, row)
            gray_path.unlink()

    def finalize(self) -> None:
        """Close every split's file."""
        for writer in self.writers.values():
            writer.finalize()


def _save_quietly(dataset_dict, out: Path) -> None:
    """``save_to_disk`` without its per-split progress bars (ours already showed the slow part)."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        dataset_dict.save_to_disk(str(out))
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _decode_all(items: Sequence[CacheItem], image_size: int, workers: int) -> Iterator[tuple[np.ndarray | None, str | None]]:
    """Decoded pixels (or a BadImage reason) for each item, in order; a pool when ``workers > 1``.

    At most ``workers * 4`` chunks are decoded ahead of the consumer, so a fast source (small
    in-memory images) cannot pile decoded arrays up in memory faster than Arrow takes them.
    """
    jobs = [(item.path, item.pixels, image_size) for item in items]
    if workers == 1 or len(jobs) < 2:
        yield from map(decode_job, jobs)
        return
    size = max(1, min(16, len(jobs) // (workers * 8)))
    pending: deque = deque()
    with _decoding_pool(workers) as pool:
        for start in range(0, len(jobs), size):
            pending.append(pool.apply_async(decode_jobs, (jobs[start : start + size],)))
            if len(pending) >= workers * 4:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


def _decoding_pool(workers: int) -> multiprocessing.pool.Pool:
    """A pool of ``workers`` decoding processes, started from a forkserver that imported this module once.

    Not plain ``fork``: a child forked from a process whose other threads (numpy's OpenBLAS pool, torch's,
    ONNX Runtime's) hold a lock inherits that lock held, and can wait on it forever; the test suite hung
    that way, and even ``vitune data prepare`` has three threads when its pool starts. The forkserver is
    single-threaded (Python 3.14's default on Linux). Its one-time import of this module costs about 2 s;
    each pool after that starts in milliseconds.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context.Pool(workers, initializer=_ignore_interrupts)


def _ignore_interrupts() -> None:
    """Worker start: Ctrl-C is the parent's to handle (it stops the pool and removes the staging folder),
    and the pool's own SIGTERM ends a worker quietly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def decode_jobs(jobs: list[tuple[str | None, Any, int]]) -> list[tuple[np.ndarray | None, str | None]]:
    """Worker: :func:`decode_job` over a chunk of jobs."""
    return [decode_job(job) for job in jobs]


def decode_job(job: tuple[str | None, Any, int]) -> tuple[np.ndarray | None, str | None]:
    """Worker: decode one image (a file path or in-memory pixels) -> (uint8 [C,S,S], None) or (None, reason).

    C is 1 for a grayscale image, else 3 (:class:`SplitWriters` stores a gray source with one channel).
    """
    path, pixels, image_size = job
    try:
        if pixels is None:
            return decode_image(Path(path), image_size, keep_gray=True), None
        if isinstance(pixels, (bytes, bytearray)):
            return decode_image(bytes(pixels), image_size, keep_gray=True), None
        if isinstance(pixels, np.ndarray):
            pixels = Image.fromarray(pixels)
        return pil_to_array(pixels, image_size, keep_gray=True), None
    except BadImage as exc:
        return None, exc.reason
    except OSError as exc:  # the file vanished or is unreadable between listing and decoding
        return None, f"unreadable file: {exc.strerror or exc}"
