"""``cifar`` SOURCE: the CIFAR-10 / CIFAR-100 "python version" folders.

::

    cifar-10-batches-py/   batches.meta (label_names), data_batch_1..5, test_batch
    cifar-100-python/      meta (fine_label_names), train, test      (fine labels are used)

SOURCE is that folder or its parent. Each batch is a dict with ``data`` (an ``N x 3072`` uint8
array, channel-planar 32x32) and ``labels`` / ``fine_labels``.

Security: these pickles are the dataset's official format, so they are read with
:class:`RestrictedUnpickler`, never plain ``pickle.load``. It resolves no global except the three
NumPy names a pickled ``uint8`` array needs (``_reconstruct``, ``ndarray``, ``dtype``), refuses
object dtypes (which could carry arbitrary objects), and raises on everything else, so a
malicious file cannot run code.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from vitune.data.sources.base import Record, Skipped, SourceOptions, SourceRows
from vitune.errors import UserError
from vitune.tasks import SINGLE_LABEL

log = logging.getLogger(__name__)

CIFAR10 = {"meta": "batches.meta", "names": "label_names", "labels": "labels",
           "batches": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}}
CIFAR100 = {"meta": "meta", "names": "fine_label_names", "labels": "fine_labels",
            "batches": {"train": ["train"], "test": ["test"]}}
RELEASE_FOLDERS = ("cifar-10-batches-py", "cifar-100-python")
SIDE = 32


def _safe_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*[a.decode("latin1") if isinstance(a, bytes) else a for a in args])
    if dtype.hasobject:
        raise pickle.UnpicklingError("object arrays are not allowed in a CIFAR batch")
    return dtype


def _reconstruct(*args: Any) -> np.ndarray:
    from numpy._core.multiarray import _reconstruct as numpy_reconstruct

    if not args or args[0] is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy arrays are allowed in a CIFAR batch")
    return numpy_reconstruct(*args)


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the NumPy array globals above; any other global raises."""

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed NumPy constructor or raise ``UnpicklingError``."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file") from None


def load_batch(path: Path) -> dict[str, Any]:
    """Load one CIFAR pickle (a dict) safely; keys are returned as ``str``."""
    try:
        with open(path, "rb") as handle:
            content = RestrictedUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise UserError(f"{path} is not a CIFAR python batch ({exc}): use the official 'python version' files") from exc
    if not isinstance(content, dict):
        raise UserError(f"{path} is not a CIFAR python batch (not a dict)")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in content.items()}


def release_folder(root: Path) -> Path | None:
    """The CIFAR folder: ``root`` itself or its ``cifar-10-batches-py`` / ``cifar-100-python`` child."""
    for candidate in (root, *(root / name for name in RELEASE_FOLDERS)):
        if _layout(candidate) is not None:
            return candidate
    return None


def _layout(folder: Path) -> dict | None:
    if (folder / CIFAR10["meta"]).is_file():
        return CIFAR10
    if (folder / CIFAR100["meta"]).is_file() and any((folder / n).is_file() for n in ("train", "test")):
        return CIFAR100
    return None


def read(root: Path | str, options: SourceOptions) -> SourceRows:
    """Read CIFAR-10 or CIFAR-100 batches into records with in-memory pixels (HxWx3 uint8)."""
    root = Path(root)
    folder = release_folder(root)
    if folder is None:
        raise UserError(f"{root} is not a CIFAR python folder: expected batches.meta or meta with train/test pickles")
    layout = _layout(folder)
    names = [_text(n) for n in load_batch(folder / layout["meta"]).get(layout["names"], [])]
    if not names:
        raise UserError(f"{folder / layout['meta']} has no {layout['names']}: it is not a CIFAR meta file")
    prefix = "" if folder == root else f"{folder.name}/"
    records: list[Record] = []
    skipped: list[Skipped] = []
    for split, batches in layout["batches"].items():
        for batch in batches:
            if (folder / batch).is_file():
                file = f"{prefix}{batch}"
                batch_records, batch_skipped = _read_batch(folder / batch, file, split, layout["labels"], names)
                records += batch_records
                skipped += batch_skipped
    if not records and not skipped:
        raise UserError(f"{folder} holds no CIFAR data batches")
    log.info("CIFAR %s: %d images, %d classes, %d skipped", folder.name, len(records), len(names), len(skipped))
    return SourceRows(format="cifar", records=records, skipped=skipped, label_order=names, task=SINGLE_LABEL.name)


def _read_batch(
    path: Path, file: str, split: str, label_key: str, names: list[str]
) -> tuple[list[Record], list[Skipped]]:
    """The records of one batch file (pixels as HxWx3 views of its array) and its unknown label ids."""
    batch = load_batch(path)
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        raise UserError(f"{path}: 'data' is not an N x 3072 uint8 array, so this is not a CIFAR batch")
    if labels is None or len(labels) != len(data):
        raise UserError(f"{path}: '{label_key}' is missing or does not match the {len(data)} images")
    images = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    records: list[Record] = []
    skipped: list[Skipped] = []
    for index, label in enumerate(labels):
        name = f"{file}#{index}"
        if not 0 <= int(label) < len(names):
            skipped.append(Skipped(name, f"unknown label index {int(label)}"))
            continue
        records.append(Record(file=name, raw_label=names[int(label)], split=split, pixels=images[index]))
    return records, skipped


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
