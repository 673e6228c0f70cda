"""``csv`` SOURCE: a label CSV beside its images.

SOURCE is either the CSV file itself or a folder holding exactly one ``*.csv`` at its top; image
paths in the CSV are relative to the CSV's folder. Columns:

- ``--image-column`` (default: the first column named image, file, file_name, filename, path or
  image_path, case-insensitive);
- ``--label-column`` (default: label, labels, target or score; else the finding columns, when at
  least two columns hold only 1, 0, -1 and blanks; else the one column left). Several columns,
  comma-separated, are one finding each, CheXpert style: 1 positive, 0 negative, -1 uncertain,
  blank not mentioned (see :class:`vitune.tasks.labels.LabelStates`);
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

from vitune.data.metadata import AGE_COLUMN_NAMES, SEX_COLUMN_NAMES, normalise_view, record_metadata
from vitune.data.sources.base import ListingTracker, Record, Skipped, SourceOptions, SourceRows
from vitune.data.sources.files import ListedFileError, SourceFiles
from vitune.errors import UserError
from vitune.tasks import MULTI_LABEL
from vitune.tasks.labels import MISSING, STATE_OF_CELL, BadLabel, LabelStates, label_state

log = logging.getLogger(__name__)

IMAGE_COLUMN_NAMES = ("image", "file", "file_name", "filename", "path", "image_path")
# ChestX-ray14's, DICOM's keyword (MIMIC-CXR's metadata), CheXpert's, plain
VIEW_COLUMN_NAMES = ("view position", "viewposition", "ap/pa", "view")
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
    label_columns = _label_columns(table, image_column, options)
    findings = len(label_columns) > 1
    if findings:
        labels, multi = _finding_states(table, label_columns), True
    else:
        labels, multi = text_labels(table.column(label_columns[0]), options.label_separator)
    files = SourceFiles(table.path.parent)
    records: list[Record] = []
    skipped: list[Skipped] = []
    listings = ListingTracker(name)
    views = table.column(find_column(table.columns, VIEW_COLUMN_NAMES))
    sexes = table.column(find_column(table.columns, SEX_COLUMN_NAMES))
    ages = table.column(find_column(table.columns, AGE_COLUMN_NAMES))
    extras = _meta_cells(table, options.meta_columns)
    rows = zip(table.lines, table.column(image_column), labels, table.column(options.group_column), views, sexes, ages,
               extras)
    for line, listed, raw_label, group, view, sex, age, extra in rows:
        try:
            file = files.locate(listed)
        except ListedFileError as exc:
            skipped.append(Skipped(listed or f"{name} line {line}", exc.reason))
            continue
        if (repeat := listings.repeat(file, line)) is not None:
            skipped.append(repeat)
            continue
        if raw_label is None or isinstance(raw_label, BadLabel):
            skipped.append(Skipped(file, raw_label.reason if raw_label is not None else "missing label"))
            continue
        records.append(Record(file=file, raw_label=raw_label, group=group or None, view=normalise_view(view),
                              meta=record_metadata(sex, age, extra)))
    described = f"{len(label_columns)} finding columns" if findings else f"label column {label_columns[0]!r}"
    log.info("%s: %d rows, %d usable, %d skipped; %s%s", name, len(table.rows), len(records),
             len(skipped), described, " (multi-label)" if multi else "")
    return SourceRows(format="csv", records=records, skipped=skipped, task=MULTI_LABEL.name if multi else None,
                      label_name=label_columns[0], label_order=label_columns if findings else None)


def _meta_cells(table: Table, meta_columns: list[str] | None) -> list[dict[str, str]]:
    """Per row the cells of the ``--meta-columns`` (each checked to exist)."""
    for column in meta_columns or ():
        require_column(table.path.name, table.columns, column, "--meta-columns")
    columns = {column: table.column(column) for column in meta_columns or ()}
    return [{column: cells[index] for column, cells in columns.items()} for index in range(len(table.rows))]


def _label_columns(table: Table, image_column: str, options: SourceOptions) -> list[str]:
    """The label column, or the finding columns (``--label-column A,B,C`` or detected), checked."""
    name = table.path.name
    if options.label_columns is not None:
        for column in options.label_columns:
            require_column(name, table.columns, column, "--label-column")
        return list(options.label_columns)
    taken = {image_column, options.group_column, *(options.meta_columns or ()),
             *(find_column(table.columns, names) for names in (VIEW_COLUMN_NAMES, SEX_COLUMN_NAMES, AGE_COLUMN_NAMES))}
    named = find_column(table.columns, LABEL_COLUMN_NAMES)
    if named is not None:
        return [named]
    findings = [c for c in table.columns if c not in taken and _is_finding_column(table.column(c))]
    if len(findings) > 1:
        return findings
    rest = [c for c in table.columns if c not in (image_column, options.group_column)]
    if len(rest) == 1:
        return rest
    raise UserError(f"{name}: cannot tell the label column among {', '.join(table.columns)}: pass --label-column "
                    "(several, comma-separated, for one column per finding)")


def _is_finding_column(cells: list[str]) -> bool:
    """Whether a column holds CheXpert-style states only (1, 0, -1, blank), at least one of them known."""
    return all(cell in STATE_OF_CELL for cell in cells) and any(cells)


def _finding_states(table: Table, columns: list[str]) -> list[LabelStates | BadLabel | None]:
    """Per row its :class:`LabelStates`, a :class:`BadLabel` for a malformed cell, or None when all are blank."""
    cells = list(zip(*(table.column(column) for column in columns)))
    out: list[LabelStates | BadLabel | None] = []
    for row in cells:
        try:
            states = LabelStates((column, label_state(cell, column)) for column, cell in zip(columns, row))
        except BadLabel as exc:
            out.append(exc)
            continue
        out.append(states if any(state != MISSING for state in states.values()) else None)
    return out
