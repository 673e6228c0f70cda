"""SOURCE readers: ``imagefolder``, ``csv``, ``chestxray14``, ``cifar`` and ``hf``.

:func:`read_source` detects the format (or takes ``--format``) and returns the reader's
:class:`~vitune.data.sources.base.SourceRows`. Every reader module exposes
``read(root, options) -> SourceRows``; none decodes pixels.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from vitune.data.sources.base import Record, Skipped, SourceOptions, SourceRows
from vitune.errors import UserError

_MODULES = {
    "imagefolder": "vitune.data.sources.imagefolder",
    "csv": "vitune.data.sources.csv_source",
    "chestxray14": "vitune.data.sources.chestxray14",
    "cifar": "vitune.data.sources.cifar",
    "hf": "vitune.data.sources.hf",
}
FORMATS = tuple(_MODULES)

__all__ = ["FORMATS", "Record", "Skipped", "SourceOptions", "SourceRows", "detect_format", "read_source",
           "require_source"]


def require_source(source: str) -> None:
    """SOURCE must be a folder, a label CSV or an ``hf:`` name: said before anything is read or written."""
    if source.startswith("hf:"):
        return
    path = Path(source)
    if not path.exists():
        raise UserError(f"SOURCE {source} does not exist: pass a folder, a label CSV or hf:NAME")
    if path.is_file() and path.suffix.lower() != ".csv":
        raise UserError(f"SOURCE {source} is a file but not a label CSV: pass its folder, a .csv file or hf:NAME")


def detect_format(source: str) -> str:
    """The format of SOURCE: ``hf:`` names -> hf; a folder with ``Data_Entry_2017*.csv`` -> chestxray14;
    CIFAR pickles -> cifar; a single top-level ``*.csv`` and no ``metadata.*`` -> csv; else imagefolder.
    """
    from vitune.data.sources import chestxray14, cifar
    from vitune.data.sources.imagefolder import METADATA_FILES

    source = str(source)
    if source.startswith("hf:"):
        return "hf"
    require_source(source)
    path = Path(source)
    if path.is_file():
        return "csv"
    try:
        top = [p.name for p in path.iterdir()]
    except OSError as exc:
        raise UserError(f"cannot read SOURCE {source}: {exc.strerror or exc}") from exc
    if chestxray14.entry_file(path) is not None:
        return "chestxray14"
    if cifar.release_folder(path) is not None:
        return "cifar"
    csv_files = [name for name in top if name.lower().endswith(".csv") and (path / name).is_file()]
    has_metadata = any(name in METADATA_FILES for name in top) or any(
        any(path.glob(f"*/{name}")) for name in METADATA_FILES
    )
    if len(csv_files) == 1 and not has_metadata:
        return "csv"
    return "imagefolder"


def read_source(source: str | Path, fmt: str = "auto", options: SourceOptions | None = None) -> SourceRows:
    """Read SOURCE with the reader of ``fmt`` (``auto``: :func:`detect_format`)."""
    source = str(source)
    options = options or SourceOptions()
    if fmt not in ("auto", *FORMATS):
        raise UserError(f"unknown --format {fmt!r}: use auto or one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(source)
    elif fmt != "hf" and source.startswith("hf:"):
        raise UserError(f"{source} is a Hugging Face dataset: use --format hf or auto")
    elif fmt != "hf" and not Path(source).exists():
        require_source(source)
    if fmt not in ("csv", "hf") and Path(source).is_file():
        raise UserError(f"--format {fmt} needs a folder as SOURCE, not the file {source}")
    reader = importlib.import_module(_MODULES[fmt])
    return reader.read(source, options)
