"""DATASET_DIR: the prepared, cached dataset every other command reads.

A ``datasets.DatasetDict`` written with ``save_to_disk`` (splits ``train``, ``validation`` and
optionally ``test``) plus ``dataset.json`` describing it. Columns: ``pixel_values`` (uint8
``[3, S, S]``, or ``[1, S, S]`` for an all-grayscale source: a third of the bytes; readers expand it to
RGB on the device), ``labels``, ``file`` (path relative to SOURCE) and ``group``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets

from vitune.data.metadata import AGE
from vitune.errors import UserError
from vitune.storage.atomic import write_atomic
from vitune.tasks import Task, get_task

INFO_FILE = "dataset.json"
INFO_VERSION = 1
SPLITS = ("train", "validation", "test")
UNLABELED = "unlabeled"  # the task of an image set without labels (`vitune pretrain`'s plain folder): no labels column


@dataclass
class DatasetInfo:
    """The contents of ``dataset.json``."""

    task: str
    labels: list[str]
    image_size: int
    format: str
    source: str
    splits: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    fingerprint: str = ""
    split_method: str = ""
    seed: int = 0
    views: dict | None = None  # --views: {"kept": [...], "dropped": {view: images}}
    # one column per finding: {"uncertain": policy, "missing": "ignore", "counts": {label: {state: n}}}
    label_states: dict | None = None
    # the patient metadata columns beside each image (sex, age, view, --meta-columns); None before 0.3
    metadata_columns: list[str] | None = None
    version: int = INFO_VERSION

    def __post_init__(self) -> None:
        if self.task != UNLABELED:
            get_task(self.task)  # an unknown task name is a UserError

    def to_json(self) -> dict:
        """The dict written to ``dataset.json``, spec keys first."""
        return asdict(self)

    def save(self, dataset_dir: Path) -> None:
        """Write ``dataset.json`` into ``dataset_dir``."""
        write_atomic(Path(dataset_dir) / INFO_FILE, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, dataset_dir: Path | str) -> "DatasetInfo":
        """Read ``dataset.json`` from ``dataset_dir`` (a clear error if it is not a DATASET_DIR)."""
        path = Path(dataset_dir) / INFO_FILE
        if not path.is_file():
            raise UserError(
                f"{dataset_dir} is not a prepared dataset (no {INFO_FILE}): "
                "run `vitune data prepare SOURCE --out DATASET_DIR` first"
            )
        try:
            raw = json.loads(path.read_text())
            known = {f for f in cls.__dataclass_fields__}
            return cls(**{k: v for k, v in raw.items() if k in known})
        except (ValueError, TypeError) as exc:  # bad JSON, a list, a missing key
            raise UserError(f"{path} is damaged ({exc}): prepare the dataset again") from exc


def features_for(task: str | Task, image_size: int, channels: int = 3,
                 metadata_columns: Sequence[str] = ()) -> datasets.Features:
    """The Arrow schema of a DATASET_DIR split for ``task`` at ``image_size`` with ``channels`` (1 or 3),
    with ``metadata_columns`` (``age`` an integer, the others text; any may be null).

    An :data:`UNLABELED` image set has no ``labels`` column.
    """
    columns = {"pixel_values": datasets.Array3D(shape=(channels, image_size, image_size), dtype="uint8")}
    if task != UNLABELED:
        columns["labels"] = get_task(task).label_feature()
    columns["file"] = datasets.Value("string")
    columns["group"] = datasets.Value("string")
    for column in metadata_columns:
        columns[column] = datasets.Value("int32" if column == AGE else "string")
    return datasets.Features(columns)


def load_dataset_dir(dataset_dir: Path | str) -> tuple[datasets.DatasetDict, DatasetInfo]:
    """Open a DATASET_DIR: its splits (numpy-formatted) and its :class:`DatasetInfo`."""
    info = DatasetInfo.load(dataset_dir)
    try:
        ds = datasets.load_from_disk(str(dataset_dir))
    except (OSError, ValueError) as exc:
        raise UserError(f"{dataset_dir} is damaged ({str(exc).splitlines()[0]}): prepare the dataset again") from exc
    if not isinstance(ds, datasets.DatasetDict):
        raise UserError(f"{dataset_dir} holds a single split, not a DatasetDict; prepare it again")
    return ds, info


class Uint8Rows:
    """A DataLoader's view of a split: rows of uint8 ``pixel_values`` (``[C, S, S]``) and ``labels``.

    A batch of rows is read from Arrow in one gather (``__getitems__``, which the DataLoader calls)
    and its pixels become one numpy view of the Arrow buffer: datasets' numpy formatter rebuilds
    every row's nested lists (and widens uint8 to int64 unless told), about half the rate.
    ``split`` is the split itself (labels for metrics, the row count). With ``labels=False`` (pre-training,
    an unlabeled image set) the rows hold the pixels alone.
    """

    def __init__(self, split: datasets.Dataset, labels: bool = True) -> None:
        self.split = split
        self.labels = labels
        columns = ["pixel_values", "labels"] if labels else ["pixel_values"]
        self._arrow = split.select_columns(columns).with_format("arrow")

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """The rows at ``indices`` (one Arrow gather, pixels as views of one uint8 array)."""
        table = self._arrow[list(indices)]
        column = table.column("pixel_values").combine_chunks()
        storage = getattr(column, "storage", column)  # Array3D: an extension array over nested lists
        pixels = storage.flatten().flatten().flatten().to_numpy(zero_copy_only=False)
        pixels = pixels.reshape(len(table), *self.split.features["pixel_values"].shape)
        if not self.labels:
            return [{"pixel_values": p} for p in pixels]
        labels = table.column("labels").to_pylist()
        return [{"pixel_values": p, "labels": y} for p, y in zip(pixels, labels)]


def uint8_rows(split: datasets.Dataset, labels: bool = True) -> Uint8Rows:
    """``split`` as :class:`Uint8Rows`, the fast uint8 rows a DataLoader takes (``labels=False``: pixels only)."""
    return Uint8Rows(split, labels)


def require_image_size(info: DatasetInfo, dataset_dir: Path | str, expected: int, model: str) -> None:
    """Fail clearly when DATASET_DIR was cached at another size than ``model`` takes."""
    if info.image_size != expected:
        raise UserError(
            f"{dataset_dir} holds {info.image_size}px images but {model} expects {expected}px: "
            f"prepare the data again with `--image-size {expected}` (or `--model {model}`)"
        )


def require_split(ds: datasets.DatasetDict, split: str, dataset_dir: Path | str) -> datasets.Dataset:
    """Return split ``split`` or fail with the splits that exist."""
    if split not in ds:
        raise UserError(
            f"{dataset_dir} has no {split!r} split (it has {', '.join(ds.keys())}): prepare it again with "
            "a split of that name (--val-fraction / --test-fraction above 0), or use one that exists"
        )
    return ds[split]
