"""``imagefolder`` SOURCE, as torchvision's ``ImageFolder`` and Hugging Face ``imagefolder`` define it.

Layouts:

- class sub-folders: ``SOURCE/<class>/**/<image>`` (single-label; the class is the first folder);
- split folders on top: ``SOURCE/train/<class>/...``, ``validation/`` (also ``val/``, ``valid/``,
  ``dev/``), ``test/``; they set :attr:`Record.split`;
- ``metadata.jsonl`` or ``metadata.csv`` in any folder (Hugging Face semantics): a ``file_name``
  relative to that folder plus a label column (``--label-column``, else the only other column,
  else one named ``label``/``labels``). Only the rows listed there are used. In JSON a list of
  strings is multi-label, a string single-label, a number regression; in ``metadata.csv`` a
  value containing ``--label-separator`` (default ``|``) makes the column multi-label.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitune.data.sources.base import (
    SPLIT_NAMES,
    Record,
    Skipped,
    SourceOptions,
    SourceRows,
    UnsafePath,
    safe_relative_path,
)
from vitune.data.sources.csv_source import read_table, require_column, text_labels
from vitune.data.sources.files import ListedFileError, SourceFiles, is_hidden, is_image_file, unsafe_reason
from vitune.errors import UserError

log = logging.getLogger(__name__)

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
FILE_NAME_COLUMN = "file_name"


@dataclass
class Tree:
    """What one walk of SOURCE finds: image files (posix, relative) and metadata files."""

    images: list[str] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)
    unsafe: list[Skipped] = field(default_factory=list)


@dataclass
class MetadataRow:
    """One row of a metadata file: where it came from, the file it names, its raw cells."""

    where: str  # "train/metadata.jsonl line 3"
    folder: str  # the metadata file's folder, relative to SOURCE
    file_name: Any
    raw_label: Any
    group: str | None


def read(root: Path | str, options: SourceOptions) -> SourceRows:
    """Read an ``imagefolder`` SOURCE (see the module docstring) into records."""
    root = Path(root)
    tree = walk(root)
    split_layout = has_split_folders(root)
    label_name = None
    if tree.metadata:
        records, skipped, label_name = _from_metadata(root, tree, split_layout, options)
    else:
        if options.group_column:
            raise UserError("--group-column needs a label file: add a metadata.csv/jsonl column or use a label CSV")
        if not tree.images and not tree.unsafe:
            raise UserError(
                f"no images found in {root}: use class sub-folders, a metadata.jsonl/metadata.csv, "
                "or pass --format csv/chestxray14/cifar/hf"
            )
        records, skipped = _from_class_folders(tree, split_layout)
        skipped = [*tree.unsafe, *skipped]  # with metadata, a listed escaping link is reported when located
    log.info("imagefolder %s: %d images, %d skipped%s", root, len(records), len(skipped),
             " (split folders)" if split_layout else "")
    return SourceRows(format="imagefolder", records=records, skipped=skipped, label_name=label_name)


def walk(root: Path) -> Tree:
    """List image and metadata files under ``root`` once; symlinks leading out are reported, not followed."""
    tree = Tree()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        relative_folder = Path(folder).relative_to(root).as_posix()
        tree.unsafe.extend(_linked_folders(root, relative_folder, dirs))  # os.walk does not enter them
        for name in sorted(files):
            if is_hidden(name):
                continue
            relative = name if relative_folder == "." else f"{relative_folder}/{name}"
            if name in METADATA_FILES:
                tree.metadata.append(relative)
            elif is_image_file(os.path.join(folder, name)):
                if _is_escaping_link(root, relative, tree):
                    continue
                tree.images.append(relative)
    return tree


def _linked_folders(root: Path, relative_folder: str, dirs: list[str]) -> list[Skipped]:
    """A symlinked sub-folder is never entered: say so, so its images are not lost silently."""
    skipped = []
    for name in dirs:
        relative = name if relative_folder == "." else f"{relative_folder}/{name}"
        if not os.path.islink(root / relative):
            continue
        try:
            safe_relative_path(root, relative)
            reason = "symlinked folder not followed (its target inside SOURCE is read where it lies)"
        except UnsafePath as exc:
            reason = unsafe_reason(exc)
        skipped.append(Skipped(f"{relative}/", reason))
    return skipped


def _is_escaping_link(root: Path, relative: str, tree: Tree) -> bool:
    if not os.path.islink(root / relative):
        return False
    try:
        safe_relative_path(root, relative)
    except UnsafePath as exc:
        tree.unsafe.append(Skipped(relative, unsafe_reason(exc)))
        return True
    return False


def has_split_folders(root: Path) -> bool:
    """Whether the top folders of ``root`` are all split folders (train, validation/val/valid/dev, test)."""
    folders = [p.name for p in root.iterdir() if p.is_dir() and not is_hidden(p.name)]
    return bool(folders) and all(name.lower() in SPLIT_NAMES for name in folders)


def split_of(file: str, split_layout: bool) -> str | None:
    """The split a file's top folder names, when SOURCE uses split folders."""
    if not split_layout or "/" not in file:
        return None
    return SPLIT_NAMES.get(file.split("/", 1)[0].lower())


def _from_class_folders(tree: Tree, split_layout: bool) -> tuple[list[Record], list[Skipped]]:
    records: list[Record] = []
    skipped: list[Skipped] = []
    for file in tree.images:
        parts = file.split("/")[1:] if split_of(file, split_layout) else file.split("/")
        if len(parts) < 2:
            skipped.append(Skipped(file, "missing label: not inside a class folder"))
            continue
        records.append(Record(file=file, raw_label=parts[0], split=split_of(file, split_layout)))
    return records, skipped


def _from_metadata(
    root: Path, tree: Tree, split_layout: bool, options: SourceOptions
) -> tuple[list[Record], list[Skipped], str | None]:
    files = SourceFiles(root)
    records: list[Record] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    label_names: list[str | None] = []
    for metadata in tree.metadata:
        rows, bad_lines, label_column = _read_metadata(root, metadata, options)
        label_names.append(label_column)
        skipped.extend(bad_lines)
        for row in rows:
            try:
                file = files.locate(row.file_name, row.folder)
            except ListedFileError as exc:
                skipped.append(Skipped(str(row.file_name) if row.file_name else row.where, exc.reason))
                continue
            if file in seen:
                skipped.append(Skipped(file, f"listed twice in metadata ({row.where})"))
                continue
            seen.add(file)
            if row.raw_label is None:
                skipped.append(Skipped(file, "missing label"))
                continue
            split = split_of(file, split_layout)
            records.append(Record(file=file, raw_label=row.raw_label, group=row.group, split=split))
    unlisted = len(set(tree.images) - seen)
    if unlisted:
        log.info("%d images not listed in any metadata file are left out (metadata lists the dataset)", unlisted)
    return records, skipped, next((name for name in label_names if name), None)


def _read_metadata(
    root: Path, metadata: str, options: SourceOptions
) -> tuple[list[MetadataRow], list[Skipped], str | None]:
    """Rows of one metadata file, the lines that could not be parsed, and its label column."""
    folder = posixpath.dirname(metadata)
    if metadata.endswith(".jsonl"):
        lines, bad = _json_lines(root / metadata, metadata)
        columns = list(dict.fromkeys(key for _, row in lines for key in row))
    else:
        table = read_table(root / metadata)
        lines, bad, columns = table.records(), [], table.columns
    if not columns:
        return [], bad, None
    require_column(metadata, columns, FILE_NAME_COLUMN, "Hugging Face imagefolder metadata")
    if options.group_column:
        require_column(metadata, columns, options.group_column, "--group-column")
    label_column = _label_column(metadata, columns, options)
    values = [row.get(label_column) for _, row in lines]
    if metadata.endswith(".csv"):
        values, _ = text_labels([v or "" for v in values], options.label_separator)
    else:
        values = [_json_label(v, options.label_separator) for v in values]
    rows = [
        MetadataRow(
            where=f"{metadata} line {line}",
            folder=folder,
            file_name=row.get(FILE_NAME_COLUMN),
            raw_label=value,
            group=_group(row, options.group_column),
        )
        for (line, row), value in zip(lines, values)
    ]
    return rows, bad, label_column


def _json_lines(path: Path, name: str) -> tuple[list[tuple[int, dict]], list[Skipped]]:
    rows: list[tuple[int, dict]] = []
    bad: list[Skipped] = []
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                bad.append(Skipped(f"{name} line {number}", f"malformed JSON line: {exc.msg}"))
                continue
            if not isinstance(row, dict):
                bad.append(Skipped(f"{name} line {number}", "malformed JSON line: not an object"))
                continue
            rows.append((number, row))
    return rows, bad


def _json_label(value: Any, separator: str | None) -> Any:
    """A JSON label as the label space reads it; strings are split only with ``--label-separator``."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if separator:
            return [part.strip() for part in text.split(separator) if part.strip()]
        return text
    return value


def _group(row: dict, group_column: str | None) -> str | None:
    value = row.get(group_column) if group_column else None
    text = "" if value is None else str(value).strip()
    return text or None


def _label_column(metadata: str, columns: list[str], options: SourceOptions) -> str:
    wanted = options.single_label_column(metadata)
    if wanted:
        return require_column(metadata, columns, wanted, "--label-column")
    candidates = [c for c in columns if c not in (FILE_NAME_COLUMN, options.group_column)]
    if len(candidates) == 1:
        return candidates[0]
    for name in ("label", "labels"):
        if name in candidates:
            return name
    raise UserError(
        f"{metadata}: cannot tell the label column among {', '.join(candidates) or 'no columns'}: pass --label-column"
    )
