"""Checking the file names a label file lists against SOURCE, fast enough for 112k-row CSVs.

Every folder is listed once; a plain name is then a dictionary lookup instead of a ``resolve()``
per row. Names are normalised lexically (``a/../b.png`` -> ``b.png``) so that the path the cache
later opens is exactly the one checked here. The folder holding a name and any symlinked file go
through :func:`safe_relative_path`, so no symlink leads out of SOURCE.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from vitune.data.dicom import is_dicom_file
from vitune.data.sources.base import UnsafePath, safe_relative_path
from vitune.errors import UserError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2", ".dcm", ".dicom"}
)


class ListedFileError(ValueError):
    """A listed file name that cannot be used; ``reason`` is the text reported in ``skipped``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def is_image_name(name: str) -> bool:
    """Whether ``name`` has an image file suffix (case-insensitive), DICOM's included."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def is_image_file(path: Path | str) -> bool:
    """An image by its name, or another file that carries the DICOM magic (PACS exports: no extension, or a UID)."""
    return is_image_name(os.path.basename(str(path))) or is_dicom_file(path)


def is_hidden(name: str) -> bool:
    """Dot files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are never data."""
    return name.startswith(".")


def unsafe_reason(error: UnsafePath) -> str:
    """The short ``skipped`` reason for a refused path: ``absolute path``, ``path outside SOURCE``..."""
    text = str(error)
    if text.startswith("absolute path"):
        return "absolute path"
    if text.startswith("path outside SOURCE"):
        return "path outside SOURCE"
    return text


class SourceFiles:
    """The files under one SOURCE root, listed lazily one folder at a time."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        # folder (posix, relative to root) -> {file name: is_symlink}, or an UnsafePath reason
        self._folders: dict[str, dict[str, bool] | str] = {}

    def locate(self, name: str, folder: str = "") -> str:
        """The posix path, relative to the root, of the file ``name`` listed in ``folder``.

        Raises :class:`ListedFileError` with reason ``empty file name``, ``invalid file name``,
        ``absolute path``, ``path outside SOURCE`` or ``missing file``.
        """
        relative = self.normalise(name, folder)
        parent, base = posixpath.split(relative)
        entries = self._entries(parent)
        if isinstance(entries, str):
            raise ListedFileError(entries)
        if base not in entries:
            raise ListedFileError("missing file")
        if entries[base]:  # a symlink: it must resolve inside SOURCE, to a file
            try:
                target = safe_relative_path(self.root, relative)
            except UnsafePath as exc:
                raise ListedFileError(unsafe_reason(exc)) from exc
            if not target.is_file():
                raise ListedFileError("missing file")
        return relative

    def files_in(self, folder: str) -> dict[str, bool]:
        """``{name: is_symlink}`` of the files in ``folder`` (empty when it is missing or unsafe)."""
        entries = self._entries(folder)
        return {} if isinstance(entries, str) else entries

    @staticmethod
    def normalise(name: str, folder: str = "") -> str:
        """``folder/name`` as a normalised posix path relative to the root, refusing escapes lexically."""
        text = "" if name is None else str(name)
        if not text.strip():
            raise ListedFileError("empty file name")
        if "\0" in text:  # no file system allows it; os calls would raise on it
            raise ListedFileError("invalid file name (a NUL character)")
        if "/" not in text and "\\" not in text and ":" not in text and text not in (".", ".."):
            return f"{folder}/{text}" if folder else text  # a plain name: nothing to normalise
        posix = text.replace("\\", "/")
        if posix.startswith("/") or posix.split("/", 1)[0].endswith(":"):
            raise ListedFileError("absolute path")
        relative = posixpath.normpath(posixpath.join(folder, posix) if folder else posix)
        if relative == ".." or relative.startswith("../"):
            raise ListedFileError("path outside SOURCE")
        if relative == ".":
            raise ListedFileError("missing file")
        return relative

    def _entries(self, folder: str) -> dict[str, bool] | str:
        if folder not in self._folders:
            self._folders[folder] = self._list(folder)
        return self._folders[folder]

    def _list(self, folder: str) -> dict[str, bool] | str:
        try:
            path = safe_relative_path(self.root, folder) if folder else self.root
        except UnsafePath as exc:
            return unsafe_reason(exc)
        try:
            with os.scandir(path) as scan:
                return {
                    entry.name: entry.is_symlink()
                    for entry in scan
                    if entry.is_symlink() or entry.is_file(follow_symlinks=False)
                }
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except OSError as exc:
            raise UserError(f"cannot list {path}: {exc.strerror or exc}; check its permissions") from exc
