"""``csv`` SOURCE: a label CSV beside its images.

SOURCE is either the CSV file itself or a folder holding exactly one ``*.csv`` at its top; image
paths in the CSV are relative to the CSV's folder. Columns:

- ``--image-column`` (default: the first column named image, file, file_name, filename, path or
  image_path, case-insensitive);
- ``--label-column`` (default: label, labels, target or score; else the one column left);
- ``--label-separator``: when given, or when a value of the label column contains ``|``, the
  column is multi-label and every value is split on it;
- ``--group-column`` (optional): patient/subject id.

The table helpers here are shared with ``metadata.csv`` in :mod:`imagefolder`.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitune.data.sources.base import ListingTracker, Record, Skipped, SourceOptions, SourceRows
from vitune.data.sources.files import ListedFileError, SourceFiles
from vitune.errors import UserError
from vitune.tasks import MULTI_LABEL

log = logging.getLogger(__name__)

IMAGE_COLUMN_NAMES = ("image", "file", "file_name", "filename", "path", "image_path")
VIEW_COLUMN_NAMES = ("view position", "viewposition", "view")  # ChestX-ray14's, DICOM's keyword, plain
LABEL_COLUMN_NAMES = ("label", "labels", "target", "score")
DEFAULT_SEPARATOR = "|"


@dataclass
class Table:
    """A CSV file read whole: its header, its non-blank rows and their line numbers."""

    path: Path
    columns: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str | None) -> list[str]:
        """The stripped cells of column ``name`` ("" where a row is short; all "" when ``name`` is None)."""
        if name is None:
            return [""] * len(self.rows)
        index = self.columns.index(name)
        return [row[index].strip() if index < len(row) else "" for row in self.rows]

    def records(self) -> list[tuple[int, dict[str, str]]]:
        """``(line number, {column: cell})`` for every row."""
        return [(line, dict(zip(self.columns, row))) for line, row in zip(self.lines, self.rows)]


def read_table(path: Path) -> Table:
    """Read a CSV (UTF-8, BOM tolerated) into a :class:`Table`; an unreadable one is a UserError."""
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            columns = [c.strip() for c in next(reader, [])]
            for row in reader:
                if len(row) > 1 or (row and row[0].strip()):  # csv yields [] for a blank line
                    rows.append(row)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text: save it as UTF-8 CSV") from exc
    except csv.Error as exc:
        raise UserError(f"{path} is not a valid CSV ({exc}): fix the line it names") from exc
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not columns:
        raise UserError(f"{path} is empty: a label CSV needs a header row")
    return Table(path=path, columns=columns, rows=rows, lines=lines)


def require_column(table_name: str, columns: list[str], column: str, flag: str) -> str:
    """``column`` if the table has it, else a UserError naming the columns it has."""
    if column not in columns:
        raise UserError(f"{table_name} has no column {column!r} ({flag}); its columns are: {', '.join(columns)}")
    return column


def find_column(columns: list[str], names: tuple[str, ...]) -> str | None:
    """The first column whose lower-cased name is in ``names``, else None."""
    lowered = {c.lower(): c for c in reversed(columns)}
    return next((lowered[name] for name in names if name in lowered), None)


def text_labels(values: list[str], separator: str | None) -> tuple[list[Any], bool]:
    """Raw labels from CSV cells, and whether the column is multi-label.

    The column is multi-label when ``separator`` is given or a value contains ``|``; each value
    is then split into a list of names. An empty cell is a missing label (None).
    """
    multi = separator is not None or any(DEFAULT_SEPARATOR in v for v in values)
    sep = separator or DEFAULT_SEPARATOR
    labels: list[Any] = []
    for value in values:
        text = (value or "").strip()
        if not text:
            labels.append(None)
        elif multi:
            labels.append([part.strip() for part in text.split(sep) if part.strip()])
        else:
            labels.append(text)
    return labels, multi


def locate_table(source: Path) -> Path:
    """The label CSV of a ``csv`` SOURCE: the file itself, or the single ``*.csv`` in the folder."""
    if source.is_file():
        return source
    found = sorted(p for p in source.glob("*.csv") if p.is_file())
    if not found:
        raise UserError(f"{source} has no label CSV at its top: add one or pass the CSV file as SOURCE")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise UserError(f"{source} has several CSV files ({names}): pass the label CSV itself as SOURCE")
    return found[0]


def read(root: Path | str, options: SourceOptions) -> SourceRows:
    """Read a ``csv`` SOURCE (the CSV file or its folder) into records relative to the CSV's folder."""
    table = read_table(locate_table(Path(root)))
    name = table.path.name
    image_column = options.image_column or find_column(table.columns, IMAGE_COLUMN_NAMES)
    if image_column is None:
        raise UserError(f"{name}: cannot tell the image column among {', '.join(table.columns)}: pass --image-column")
    require_column(name, table.columns, image_column, "--image-column")
    if options.group_column:
        require_column(name, table.columns, options.group_column, "--group-column")
    label_column = options.label_column or _default_label_column(table.columns, image_column, options.group_column)
    if label_column is None:
        raise UserError(f"{name}: cannot tell the label column among {', '.join(table.columns)}: pass --label-column")
    require_column(name, table.columns, label_column, "--label-column")

    labels, multi = text_labels(table.column(label_column), options.label_separator)
    files = SourceFiles(table.path.parent)
    records: list[Record] = []
    skipped: list[Skipped] = []
    listings = ListingTracker(name)
    views = table.column(find_column(table.columns, VIEW_COLUMN_NAMES))
    rows = zip(table.lines, table.column(image_column), labels, table.column(options.group_column), views)
    for line, listed, raw_label, group, view in rows:
        try:
            file = files.locate(listed)
        except ListedFileError as exc:
            skipped.append(Skipped(listed or f"{name} line {line}", exc.reason))
            continue
        if (repeat := listings.repeat(file, line)) is not None:
            skipped.append(repeat)
            continue
        if raw_label is None:
            skipped.append(Skipped(file, "missing label"))
            continue
        records.append(Record(file=file, raw_label=raw_label, group=group or None, view=view.upper() or None))
    log.info("%s: %d rows, %d usable, %d skipped; label column %r%s", name, len(table.rows), len(records),
             len(skipped), label_column, " (multi-label)" if multi else "")
    return SourceRows(format="csv", records=records, skipped=skipped, task=MULTI_LABEL.name if multi else None,
                      label_name=label_column)


def _default_label_column(columns: list[str], image_column: str, group_column: str | None) -> str | None:
    named = find_column(columns, LABEL_COLUMN_NAMES)
    if named is not None:
        return named
    rest = [c for c in columns if c not in (image_column, group_column)]
    return rest[0] if len(rest) == 1 else None
