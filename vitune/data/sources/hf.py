"""``hf`` SOURCE: ``hf:NAME[:CONFIG]`` through ``datasets.load_dataset(NAME, CONFIG)``.

NAME is a Hub dataset id or a local folder ``load_dataset`` understands (parquet/CSV/JSON files,
an ``imagefolder``); a folder written by ``save_to_disk`` is opened with ``load_from_disk``.
Remote code is never run. Columns: the image is the first ``datasets.Image`` feature (or
``--image-column``); the label is ``--label-column``, else a ``ClassLabel`` (or list of
``ClassLabel``: multi-label) named ``label``/``labels``, else the first such column, else a column
named ``label``/``labels``, else the first numeric one.
``ClassLabel`` ids become their names; -1 (unlabelled) is a missing label. Splits ``train``,
``validation`` (``valid``, ``val``, ``dev``) and ``test`` are kept as the source's split; other
splits (``unsupervised``...) are left out with a log line.

Images are handed to the cache as their encoded bytes (decoded later, with the decompression-bomb
guard); an image stored as a file path is read only if it lies inside the local dataset folder or
the Hugging Face caches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitune.data.sources.base import SPLIT_NAMES, Record, Skipped, SourceOptions, SourceRows
from vitune.errors import UserError
from vitune.tasks import MULTI_LABEL, SINGLE_LABEL

log = logging.getLogger(__name__)

PREFIX = "hf:"
_BATCH = 512


def parse_name(source: str) -> tuple[str, str | None]:
    """``hf:NAME[:CONFIG]`` (or a bare NAME) -> ``(NAME, CONFIG or None)``."""
    text = source[len(PREFIX):] if source.startswith(PREFIX) else source
    name, _, config = text.partition(":")
    if not name:
        raise UserError(f"{source!r} names no dataset: use hf:NAME or hf:NAME:CONFIG")
    return name, config or None


def read(root: Path | str, options: SourceOptions) -> SourceRows:
    """Load ``hf:NAME[:CONFIG]`` and list its rows with their encoded images as pixels."""
    name, config = parse_name(str(root))
    splits = _load(name, config)
    features = next(iter(splits.values())).features
    image_column = _image_column(features, options.image_column, name)
    label_column = _label_column(features, options.single_label_column(name), image_column, name)
    if options.group_column and options.group_column not in features:
        raise UserError(f"{name} has no column {options.group_column!r} (--group-column); it has {', '.join(features)}")
    task, label_order = _class_label(features[label_column])
    columns = Columns(image_column, label_column, options.group_column, label_order, _allowed_roots(name))
    records: list[Record] = []
    skipped: list[Skipped] = []
    for split_name, dataset in splits.items():
        if split_name.lower() not in SPLIT_NAMES:
            log.info("split %r of %s left out: only train/validation/test are used", split_name, name)
            continue
        split_records, split_skipped = _read_split(dataset, split_name, columns)
        records += split_records
        skipped += split_skipped
    log.info("hf %s: %d rows, %d skipped; image column %r, label column %r", name, len(records), len(skipped),
             image_column, label_column)
    return SourceRows(format="hf", records=records, skipped=skipped, label_order=label_order,
                      task=task, label_name=label_column)


def _load(name: str, config: str | None):
    import datasets

    local = Path(name)
    try:
        if local.is_dir() and ((local / "dataset_dict.json").is_file() or (local / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(local))
        else:
            loaded = datasets.load_dataset(name, config)
    except Exception as exc:  # datasets raises many types (offline, not found, bad config): all are user-facing
        raise UserError(f"cannot load hf:{name}{':' + config if config else ''}: {exc}".splitlines()[0]) from exc
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    if not isinstance(loaded, datasets.DatasetDict) or not loaded:
        raise UserError(f"hf:{name} did not load as a dataset with splits")
    return loaded


def _image_column(features, wanted: str | None, name: str) -> str:
    import datasets

    if wanted:
        if wanted not in features:
            raise UserError(f"{name} has no column {wanted!r} (--image-column); it has {', '.join(features)}")
        return wanted
    for column, feature in features.items():
        if isinstance(feature, datasets.Image):
            return column
    raise UserError(f"{name} has no Image column among {', '.join(features)}: pass --image-column")


def _label_column(features, wanted: str | None, image_column: str, name: str) -> str:
    if wanted:
        if wanted not in features:
            raise UserError(f"{name} has no column {wanted!r} (--label-column); it has {', '.join(features)}")
        return wanted
    candidates = {c: f for c, f in features.items() if c != image_column}
    classes = [c for c, f in candidates.items() if _class_label(f)[0] is not None]
    named = [c for c in candidates if c in ("label", "labels")]
    ranked = [c for c in classes if c in named] + classes + named + [c for c, f in candidates.items() if _is_numeric(f)]
    if not ranked:
        raise UserError(f"{name}: cannot tell the label column among {', '.join(candidates)}: pass --label-column")
    return ranked[0]


def _class_label(feature) -> tuple[str | None, list[str] | None]:
    """``(task name, class names)`` a ``ClassLabel`` feature (or a list of them) implies, else ``(None, None)``."""
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return SINGLE_LABEL.name, list(feature.names)
    inner = getattr(feature, "feature", None)
    if isinstance(feature, (datasets.List, datasets.LargeList)) and isinstance(inner, datasets.ClassLabel):
        return MULTI_LABEL.name, list(inner.names)
    return None, None


def _is_numeric(feature) -> bool:
    """A number column: class ids or a regression target, told apart from its values."""
    import datasets

    return isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint", "float"))


@dataclass
class Columns:
    """What to read from every split: the columns, ClassLabel names, where image files may be."""

    image: str
    label: str
    group: str | None
    label_order: list[str] | None
    allowed_roots: list[Path]


def _read_split(dataset, split_name: str, columns: Columns) -> tuple[list[Record], list[Skipped]]:
    """Records of one split (``file`` = ``split#index``), images as encoded bytes, never decoded."""
    import datasets

    wanted = [columns.image, columns.label] + ([columns.group] if columns.group else [])
    dataset = dataset.select_columns(list(dict.fromkeys(wanted)))
    if isinstance(dataset.features[columns.image], datasets.Image):
        dataset = dataset.cast_column(columns.image, datasets.Image(decode=False))
    split = SPLIT_NAMES[split_name.lower()]
    records: list[Record] = []
    skipped: list[Skipped] = []
    index = 0
    for batch in dataset.iter(batch_size=_BATCH):
        groups = batch[columns.group] if columns.group else [None] * len(batch[columns.label])
        for image, label, group in zip(batch[columns.image], batch[columns.label], groups):
            file = f"{split_name}#{index}"
            index += 1
            try:
                pixels = _encoded_image(image, columns.allowed_roots)
            except ValueError as exc:
                skipped.append(Skipped(file, str(exc)))
                continue
            raw_label = _raw_label(label, columns.label_order)
            if raw_label is None:
                skipped.append(Skipped(file, "missing label"))
                continue
            group = None if group is None else str(group)
            records.append(Record(file=file, raw_label=raw_label, split=split, pixels=pixels, group=group))
    return records, skipped


def _raw_label(value: Any, label_order: list[str] | None) -> Any:
    """ClassLabel ids -> names (a list for multi-label); -1 or None -> None (missing)."""
    if value is None or label_order is None:
        return value
    if isinstance(value, list):
        return [label_order[i] if 0 <= i < len(label_order) else f"#{i}" for i in value]
    return label_order[value] if 0 <= value < len(label_order) else None


def _encoded_image(image: Any, allowed: list[Path]) -> bytes:
    """The encoded bytes of an undecoded ``datasets.Image`` value; raises ValueError with the reason."""
    if isinstance(image, dict):
        if image.get("bytes"):
            return image["bytes"]
        path = image.get("path")
        if path:
            resolved = Path(path).resolve()
            if not any(root == resolved or root in resolved.parents for root in allowed):
                raise ValueError("path outside SOURCE")
            if not resolved.is_file():
                raise ValueError("missing file")
            return resolved.read_bytes()
    if isinstance(image, (bytes, bytearray)) and image:
        return bytes(image)
    raise ValueError("missing image")


def _allowed_roots(name: str) -> list[Path]:
    """Where image files of this dataset may live: its local folder and the Hugging Face caches."""
    import datasets
    from huggingface_hub import constants

    roots = [Path(datasets.config.HF_DATASETS_CACHE), Path(constants.HF_HUB_CACHE)]
    if Path(name).is_dir():
        roots.append(Path(name))
    return [root.resolve() for root in roots]
