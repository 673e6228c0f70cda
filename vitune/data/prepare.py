"""``vitune data prepare``: SOURCE -> DATASET_DIR.

read the source -> infer the label space -> encode labels -> assign splits -> decode and cache
pixels -> write ``dataset.json``. Every filter logs its counts and every dropped row is listed in
``dataset.json`` ``skipped`` with its reason; nothing disappears silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitune.config import PrepareConfig
from vitune.data.cache import CacheItem, build_cache, cached_info, check_out_dir, source_fingerprint
from vitune.data.dataset_dir import DatasetInfo
from vitune.data.metadata import metadata_columns, row_metadata
from vitune.data.sources import require_source
from vitune.data.sources.base import Record, Skipped, SourceOptions, SourceRows
from vitune.data.splits import assign_splits
from vitune.data.views import keep_views, with_dicom_tags
from vitune.errors import UserError
from vitune.storage.atomic import disk_full, remove_orphans, replace_dir, staging_dir
from vitune.storage.lock import OutputLock
from vitune.tasks.label_space import infer_label_space
from vitune.tasks.labels import BadLabel, LabelStates, state_counts

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 224  # without --image-size or --model


def prepare(config: PrepareConfig) -> DatasetInfo:
    """Prepare SOURCE into the DATASET_DIR ``config.out`` and return its :class:`DatasetInfo`.

    An unchanged source prepared again with the same options into the same ``out`` is a cache
    hit: nothing is decoded. One process at a time writes ``out`` (a second is refused); the new
    DATASET_DIR is built beside it and renamed into place, so a killed or failed prepare (a full
    disk included) leaves the previous one whole and, after the next prepare, nothing behind.

    The image size is ``config.image_size``, else 224; with ``config.model`` and no image size, prepare through
    :func:`vitune.workflows.prepare.prepare`, which asks the model for its input size.
    """
    require_source(config.source)
    size = image_size(config)
    return build_dataset_dir(
        config.source, config.out, config.fingerprint_settings(size),
        lambda fingerprint, staging: _prepare_into(config, size, fingerprint, staging),
    )


def build_dataset_dir(source: str, out: Path, settings: dict[str, Any],
                      build: Callable[[str, Path], DatasetInfo]) -> DatasetInfo:
    """The DATASET_DIR ``out`` of ``source`` read with ``settings``: the one there when it was built from the same
    files with the same settings (a cache hit), else what ``build(fingerprint, staging)`` writes into
    ``staging/dataset``, renamed into place whole. ``out`` is held by this process alone meanwhile.
    """
    check_out_dir(out, source)
    with OutputLock(out):
        remove_orphans(out)
        fingerprint = source_fingerprint(source, settings)
        hit = cached_info(out, fingerprint)
        if hit is not None:
            log.info("cache hit: %s already holds this source with these options (fingerprint %s); nothing decoded",
                     out, fingerprint[:12])
            return hit
        kept = f"{out} is unchanged" if out.exists() else "nothing was written"
        with disk_full(f"preparing {out}", kept), staging_dir(out) as staging:
            info = build(fingerprint, staging)
            replace_dir(staging / "dataset", out)
    return info


def image_size(config: PrepareConfig) -> int:
    """``--image-size``, else 224 when no ``--model`` is given (a model's own size is looked up a layer above)."""
    if config.image_size is not None:
        return config.image_size
    if config.model is None:
        return DEFAULT_IMAGE_SIZE
    raise UserError(f"--model {config.model}: the model's image size is looked up by "
                    "vitune.workflows.prepare.prepare (`vitune data prepare`); or give --image-size")


def source_options(config: PrepareConfig) -> SourceOptions:
    """The options the source readers take from ``config``."""
    return SourceOptions(
        image_column=config.image_column,
        label_columns=config.label_column,
        label_separator=config.label_separator,
        group_column=config.group_column,
        no_finding_as_label=config.no_finding_as_label,
        meta_columns=config.meta_columns,
    )


def _prepare_into(config: PrepareConfig, size: int, fingerprint: str, staging: Path) -> DatasetInfo:
    """Read, label, split and decode SOURCE into ``staging/dataset`` (a whole DATASET_DIR, dataset.json last)."""

    read = _labelled_records(config)
    assignment = assign_splits(
        read.records,
        read.labels,
        read.space.task,
        method=config.split,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        official=read.rows.official_split,
    )
    columns = metadata_columns(read.records, config.meta_columns)
    items = _cache_items(config.source, read.records, read.labels, assignment.splits, columns)
    cache = build_cache(items, staging, read.space.task, size, workers=config.workers, metadata_columns=columns)
    log.info("decoded: %s; %d bad images", ", ".join(f"{k} {v}" for k, v in cache.splits.items()), len(cache.skipped))
    if not cache.splits.get("validation"):
        log.warning("no validation split: raise --val-fraction above 0 to evaluate during training")

    skipped = [*read.rows.skipped, *read.bad_labels, *cache.skipped]
    info = DatasetInfo(
        task=read.space.task,
        labels=list(read.space.labels),
        image_size=size,
        format=read.rows.format,
        source=_describe_source(config.source),
        splits=cache.splits,
        skipped=[{"file": s.file, "reason": s.reason} for s in skipped],
        fingerprint=fingerprint,
        split_method=assignment.method,
        seed=config.seed,
        views=read.views,
        label_states=_label_states(read, config.uncertain),
        metadata_columns=columns,
    )
    info.save(staging / "dataset")
    return info


@dataclass
class _Labelled:
    """The source read, filtered by view and labelled."""

    rows: SourceRows
    space: Any
    records: list[Record]
    labels: list[Any]
    bad_labels: list[Skipped]
    views: dict | None


def _labelled_records(config: PrepareConfig) -> _Labelled:
    """Read the source, fill and filter views, and encode its labels."""
    from vitune.data.sources import read_source

    rows = read_source(config.source, config.fmt, source_options(config))
    log.info("read %d records from %s (%s); %d rejected by the reader", len(rows.records), config.source,
             rows.format, len(rows.skipped))
    rows.records = with_dicom_tags(rows.records, _source_root(config.source), need_views=config.views is not None)
    rows.records, views = keep_views(rows.records, config.view_set())
    if not rows.records and views:
        raise UserError(f"--views {','.join(config.views)} keeps none of the images (dropped by view: {views['dropped']}): "
                        "give views the source has")
    if not rows.records:
        raise UserError(f"{config.source} has no usable images ({len(rows.skipped)} rejected): check the layout and --format")
    requested_task = rows.task if config.task == "auto" and rows.task else config.task
    raw_labels = [record.raw_label for record in rows.records]
    space = infer_label_space(raw_labels, task=requested_task, label_order=rows.label_order, label_name=rows.label_name,
                              uncertain=config.uncertain)
    records, labels, bad_labels = _encode_labels(rows.records, space)
    log.info("labels: %s, %d labels; %d kept, %d with a bad label", space.task, len(space.labels), len(records),
             len(bad_labels))
    if not records:
        raise UserError(f"no record of {config.source} has a usable label: check --label-column and --task")
    return _Labelled(rows, space, records, labels, bad_labels, views)


def _label_states(read: _Labelled, uncertain: str) -> dict | None:
    """What ``dataset.json`` records of CheXpert-style findings: the policies and each label's states."""
    raws = [record.raw_label for record in read.records]
    if not raws or not isinstance(raws[0], LabelStates):
        return None
    return {"uncertain": uncertain, "missing": "ignore", "counts": state_counts(raws, read.space.labels)}


def _cache_items(source: str, records: list[Record], labels: list[Any], splits: list[str],
                 columns: list[str]) -> list[CacheItem]:
    """What the cache decodes: in-memory pixels, or the file under SOURCE, with the row's columns
    (the metadata ``columns`` included)."""
    root = _source_root(source)
    return [
        CacheItem(
            file=record.file,
            label=label,
            group=None if record.group is None else str(record.group),
            split=split,
            path=None if record.pixels is not None else str(root / record.file),
            pixels=record.pixels,
            meta=row_metadata(record, columns),
        )
        for record, label, split in zip(records, labels, splits)
    ]


def _encode_labels(records: list[Record], space) -> tuple[list[Record], list[Any], list[Skipped]]:
    """Encode each record's label; a label the space rejects becomes a skipped row."""
    kept: list[Record] = []
    labels: list[Any] = []
    bad: list[Skipped] = []
    for record in records:
        try:
            labels.append(space.encode(record.raw_label))
        except BadLabel as exc:
            bad.append(Skipped(record.file, exc.reason))
            continue
        kept.append(record)
    return kept, labels, bad


def _source_root(source: str) -> Path:
    """The folder record paths are relative to: SOURCE, or the folder of a SOURCE label file."""
    path = Path(source)
    return path if path.is_dir() else path.parent


def _describe_source(source: str) -> str:
    """How ``dataset.json`` names the source: an absolute path, or ``hf:NAME`` as given."""
    return source if source.startswith("hf:") else str(Path(source).resolve())

