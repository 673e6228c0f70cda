"""What every source reader returns: rows to decode, rows already rejected, and hints.

A reader never decodes pixels (the cache does that in parallel) and never opens a path outside
SOURCE: :func:`safe_relative_path` is the one gate every file name goes through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from vitune.errors import UserError

# Split names a source may use (split folders, Hub splits) -> the DATASET_DIR split they become.
SPLIT_NAMES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}


@dataclass
class Record:
    """One example as the source describes it.

    ``file`` is the path relative to SOURCE (posix). ``raw_label`` is what the source says
    (a class name, a list of names, a number) before encoding. ``pixels`` is set only for sources
    whose images are not files (CIFAR arrays, Hub datasets): a PIL image or encoded bytes.
    ``split`` is the split the source assigns (a split folder, an official list), else None.
    ``view`` is the projection (PA, AP, LL...) from a "View Position" column or the DICOM header;
    ``meta`` the patient's ``sex`` and ``age`` and any ``--meta-columns`` (:mod:`vitune.data.metadata`).
    """

    file: str
    raw_label: Any
    group: str | None = None
    split: str | None = None
    pixels: Any = None
    view: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class Skipped:
    """A row left out, with the reason reported in ``dataset.json``."""

    file: str
    reason: str


@dataclass
class SourceRows:
    """A source reader's output."""

    format: str
    records: list[Record]
    skipped: list[Skipped] = field(default_factory=list)
    label_order: list[str] | None = None  # a canonical label order (ChestX-ray14's 14 findings)
    task: str | None = None  # a task the format implies (None: detect from the labels)
    official_split: bool = False  # the source itself assigns train/test (ChestX-ray14 lists)
    label_name: str | None = None  # the label column's name: a regression's one label


class UnsafePath(ValueError):
    """A file name in a label file that points outside SOURCE."""


def safe_relative_path(root: Path, name: str) -> Path:
    """Resolve ``name`` under ``root``; absolute paths, ``..`` escapes and symlinks out are refused."""
    if not name or not str(name).strip():
        raise UnsafePath("empty file name")
    if "\0" in str(name):
        raise UnsafePath("invalid file name (a NUL character)")
    pure = PurePosixPath(str(name).replace("\\", "/"))
    if pure.is_absolute() or (len(pure.parts) and pure.parts[0].endswith(":")):
        raise UnsafePath(f"absolute path not allowed: {name}")
    root_resolved = root.resolve()
    candidate = (root_resolved / Path(*pure.parts)).resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise UnsafePath(f"path outside SOURCE: {name}")
    return candidate


@dataclass
class SourceOptions:
    """Reader options from the CLI; each reader uses the ones that apply to its format."""

    image_column: str | None = None
    label_columns: list[str] | None = None  # --label-column: several for a CSV's one-column-per-finding labels
    label_separator: str | None = None
    group_column: str | None = None
    no_finding_as_label: bool = False
    meta_columns: list[str] | None = None  # --meta-columns: other label-CSV columns kept as text

    def single_label_column(self, source: str) -> str | None:
        """The one ``--label-column`` of a metadata file or a Hub dataset (None: not given)."""
        if not self.label_columns:
            return None
        if len(self.label_columns) > 1:
            raise UserError(f"{source}: --label-column takes one column here, not {','.join(self.label_columns)} "
                            "(one column per finding is for a label CSV)")
        return self.label_columns[0]


class ListingTracker:
    """Remembers the images already listed by a table: a second row for one image is skipped.

    Two rows for one file could place it in two splits with two labels (a leak), so only the
    first counts.
    """

    def __init__(self, table_name: str):
        self.table_name = table_name
        self.seen: set[str] = set()

    def repeat(self, file: str, line: int | str) -> Skipped | None:
        """The skip record for ``file`` when it was listed before, else ``None`` (and remember it)."""
        if file in self.seen:
            return Skipped(file, f"listed twice in {self.table_name} (line {line})")
        self.seen.add(file)
        return None
