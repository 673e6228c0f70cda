"""``vitune data prepare``: SOURCE -> DATASET_DIR.

read the source -> infer the label space -> encode labels -> assign splits -> decode and cache
pixels -> write ``dataset.json``. Every filter logs its counts and every dropped row is listed in
``dataset.json`` ``skipped`` with its reason; nothing disappears silently.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vitune.data.cache import CacheItem, build_cache, cached_info, check_out_dir, source_fingerprint
from vitune.data.dataset_dir import DatasetInfo
from vitune.data.sources.base import Record, Skipped, SourceOptions, SourceRows
from vitune.data.splits import SPLIT_METHODS, assign_splits
from vitune.errors import UserError
from vitune.tasks import TASK_NAMES

log = logging.getLogger(__name__)

TASK_CHOICES = ("auto", *TASK_NAMES)


@dataclass
class PrepareConfig:
    """Everything ``prepare`` needs, validated on construction."""

    source: str
    out: Path
    fmt: str = "auto"
    image_size: int | None = None
    model: str | None = None
    task: str = "auto"
    split: str = "auto"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    group_column: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    label_separator: str | None = None
    no_finding_as_label: bool = False
    workers: int | None = None

    def __post_init__(self) -> None:
        self.source = str(self.source)
        if not self.source.startswith("hf:"):
            self.source = str(Path(self.source).expanduser())
        self.out = Path(self.out).expanduser()
        if self.task not in TASK_CHOICES:
            raise UserError(f"unknown --task {self.task!r}: use one of {', '.join(TASK_CHOICES)}")
        if self.split not in SPLIT_METHODS:
            raise UserError(f"unknown --split {self.split!r}: use one of {', '.join(SPLIT_METHODS)}")
        for flag, value in (("--val-fraction", self.val_fraction), ("--test-fraction", self.test_fraction)):
            if not 0.0 <= value < 1.0:
                raise UserError(f"{flag} {value} is outside [0, 1): pass a fraction such as 0.1")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise UserError(
                f"--val-fraction + --test-fraction = {self.val_fraction + self.test_fraction:g} leaves no "
                "training data: make their sum below 1"
            )
        if self.image_size is not None and not 1 <= self.image_size <= 4096:
            raise UserError(f"--image-size {self.image_size} is out of range: use 1 to 4096 (224 is usual)")
        if self.workers is not None and self.workers < 1:
            raise UserError(f"workers must be at least 1, got {self.workers}")
        if not self.source.startswith("hf:") and not Path(self.source).exists():
            raise UserError(f"SOURCE {self.source} does not exist: pass a folder, a label CSV or hf:NAME")
        if Path(self.source).is_file() and Path(self.source).suffix.lower() != ".csv":
            raise UserError(f"SOURCE {self.source} is a file: pass a folder, a label CSV (.csv) or hf:NAME")

    def resolved_image_size(self) -> int:
        """``--image-size``, else the model's input size, else 224."""
        if self.image_size is not None:
            return self.image_size
        from vitune.models import default_image_size

        return default_image_size(self.model)

    def source_options(self) -> SourceOptions:
        """The options the source readers take."""
        return SourceOptions(
            image_column=self.image_column,
            label_column=self.label_column,
            label_separator=self.label_separator,
            group_column=self.group_column,
            no_finding_as_label=self.no_finding_as_label,
        )

    def fingerprint_settings(self, image_size: int) -> dict[str, Any]:
        """The options that change the cached result (not ``out``, ``model`` or ``workers``)."""
        settings = asdict(self)
        for key in ("source", "out", "model", "workers"):
            settings.pop(key)
        settings["image_size"] = image_size
        return settings


def prepare(source: str | Path, out: str | Path, **options: Any) -> DatasetInfo:
    """Prepare SOURCE into the DATASET_DIR ``out`` and return its :class:`DatasetInfo`.

    ``options`` are the other fields of :class:`PrepareConfig` (the ``vitune data prepare`` flags):
    ``fmt``, ``image_size``, ``model``, ``task``, ``split``, ``val_fraction``, ``test_fraction``,
    ``seed``, ``group_column``, ``image_column``, ``label_column``, ``label_separator``,
    ``no_finding_as_label``, ``workers`` (decoding processes, default all cores). An unchanged
    source prepared again with the same options into the same ``out`` is a cache hit: nothing is
    decoded.
    """
    return run_prepare(PrepareConfig(source=str(source), out=Path(out), **options))


def run_prepare(config: PrepareConfig) -> DatasetInfo:
    """Run the prepare pipeline for a validated :class:`PrepareConfig`."""
    size = config.resolved_image_size()
    check_out_dir(config.out, config.source)
    fingerprint = source_fingerprint(config.source, config.fingerprint_settings(size))
    hit = cached_info(config.out, fingerprint)
    if hit is not None:
        log.info("cache hit: %s already holds this source with these options (fingerprint %s); nothing decoded",
                 config.out, fingerprint[:12])
        return hit

    rows, space, records, labels, bad_labels = _labelled_records(config)
    assignment = assign_splits(
        records,
        labels,
        space.task,
        method=config.split,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        official=rows.official_split,
    )
    items = _cache_items(config.source, records, labels, assignment.splits)
    cache = build_cache(items, config.out, space.task, size, workers=config.workers)
    log.info("decoded: %s; %d bad images", ", ".join(f"{k} {v}" for k, v in cache.splits.items()), len(cache.skipped))
    if not cache.splits.get("validation"):
        log.warning("no validation split: raise --val-fraction above 0 to evaluate during training")

    info = DatasetInfo(
        task=space.task,
        labels=list(space.labels),
        image_size=size,
        format=rows.format,
        source=_describe_source(config.source),
        splits=cache.splits,
        skipped=[{"file": s.file, "reason": s.reason} for s in [*rows.skipped, *bad_labels, *cache.skipped]],
        fingerprint=fingerprint,
        split_method=assignment.method,
        seed=config.seed,
    )
    info.save(config.out)
    return info


def _labelled_records(config: PrepareConfig) -> tuple[SourceRows, Any, list[Record], list[Any], list[Skipped]]:
    """Read the source and encode its labels: (rows, label space, kept records, their labels, bad-label rows)."""
    from vitune.data.labels import infer_label_space
    from vitune.data.sources import read_source

    rows = read_source(config.source, config.fmt, config.source_options())
    log.info("read %d records from %s (%s); %d rejected by the reader", len(rows.records), config.source,
             rows.format, len(rows.skipped))
    if not rows.records:
        raise UserError(f"{config.source} has no usable images ({len(rows.skipped)} rejected): check the layout and --format")
    requested_task = rows.task if config.task == "auto" and rows.task else config.task
    space = infer_label_space(rows.records, task=requested_task, label_order=rows.label_order, label_name=rows.label_name)
    records, labels, bad_labels = _encode_labels(rows.records, space)
    log.info("labels: %s, %d labels; %d kept, %d with a bad label", space.task, len(space.labels), len(records),
             len(bad_labels))
    if not records:
        raise UserError(f"no record of {config.source} has a usable label: check --label-column and --task")
    return rows, space, records, labels, bad_labels


def _cache_items(source: str, records: list[Record], labels: list[Any], splits: list[str]) -> list[CacheItem]:
    """What the cache decodes: in-memory pixels, or the file under SOURCE, with the row's columns."""
    root = _source_root(source)
    return [
        CacheItem(
            file=record.file,
            label=label,
            group=None if record.group is None else str(record.group),
            split=split,
            path=None if record.pixels is not None else str(root / record.file),
            pixels=record.pixels,
        )
        for record, label, split in zip(records, labels, splits)
    ]


def _encode_labels(records: list[Record], space) -> tuple[list[Record], list[Any], list[Skipped]]:
    """Encode each record's label; a label the space rejects becomes a skipped row."""
    from vitune.data.labels import BadLabel

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

