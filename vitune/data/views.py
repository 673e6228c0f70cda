"""What the images themselves say: the patient, the view, sex and age from DICOM headers, and ``--views``.

A record without a group takes its DICOM PatientID (so a patient never spans two splits even
without a group column), one without a view its DICOM ViewPosition, one without sex or age the
header's PatientSex and PatientAge. ``--views PA,AP`` then keeps
the images of those views; every image it drops is counted by view in ``dataset.json`` and logged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path

from vitune.data.dicom import DicomTags, dicom_tags
from vitune.data.metadata import AGE, SEX, normalise_sex, normalise_view, parse_age
from vitune.data.sources.base import Record
from vitune.data.sources.files import is_image_name

log = logging.getLogger(__name__)
UNKNOWN_VIEW = "unknown"


def _maybe_dicom(file: str) -> bool:
    name = file.rsplit("/", 1)[-1].lower()
    return name.endswith((".dcm", ".dicom")) or not is_image_name(name)


def with_dicom_tags(records: list[Record], root: Path, need_views: bool = False) -> list[Record]:
    """``records`` with group, view, sex and age filled from their DICOM headers where missing.

    A file named like a picture (``.png``) is only opened for its group, or its view when ``need_views``.
    """
    filled = 0
    out = []
    for record in records:
        missing = record.group is None or (need_views and record.view is None)
        header_only = record.file.rsplit("/", 1)[-1].lower().endswith((".dcm", ".dicom"))
        unknown_patient = record.view is None or record.meta.get(SEX) is None or record.meta.get(AGE) is None
        if record.pixels is None and (missing or (header_only and unknown_patient)) and _maybe_dicom(record.file):
            tags = dicom_tags(root / record.file)
            if tags is not None:
                record = _with_tags(record, tags)
                filled += 1
        out.append(record)
    if filled:
        log.info("read PatientID, ViewPosition, PatientSex and PatientAge from %d DICOM headers", filled)
    return out


def _with_tags(record: Record, tags: DicomTags) -> Record:
    """``record`` with what its header says where the source said nothing."""
    meta = dict(record.meta)
    if meta.get(SEX) is None:
        meta[SEX] = normalise_sex(tags.sex)
    if meta.get(AGE) is None:
        meta[AGE] = parse_age(tags.age)
    return dataclasses.replace(record, group=record.group or tags.patient, view=record.view or normalise_view(tags.view),
                               meta=meta)


def keep_views(records: list[Record], views: frozenset[str] | None) -> tuple[list[Record], dict | None]:
    """The records of ``views`` (all when None) and ``{"kept": [...], "dropped": {view: images}}``."""
    if views is None:
        return records, None
    kept = [r for r in records if (r.view or "").upper() in views]
    dropped = Counter((r.view or UNKNOWN_VIEW).upper() for r in records if (r.view or "").upper() not in views)
    summary = {"kept": sorted(views), "dropped": dict(sorted(dropped.items()))}
    log.info("--views %s: kept %d of %d images; dropped %s", ",".join(sorted(views)), len(kept), len(records),
             ", ".join(f"{view} {n}" for view, n in summary["dropped"].items()) or "none")
    return kept, summary
