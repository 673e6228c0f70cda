"""What the images themselves say: the patient and the view from DICOM headers, and ``--views``.

A record without a group takes its DICOM PatientID (so a patient never spans two splits even
without a group column), one without a view its DICOM ViewPosition. ``--views PA,AP`` then keeps
the images of those views; every image it drops is counted by view in ``dataset.json`` and logged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path

from vitune.data.dicom import dicom_tags
from vitune.data.sources.base import Record
from vitune.data.sources.files import is_image_name

log = logging.getLogger(__name__)
UNKNOWN_VIEW = "unknown"


def _maybe_dicom(file: str) -> bool:
    name = file.rsplit("/", 1)[-1].lower()
    return name.endswith((".dcm", ".dicom")) or not is_image_name(name)


def with_dicom_tags(records: list[Record], root: Path, need_views: bool = False) -> list[Record]:
    """``records`` with group (and, when ``need_views``, view) filled from their DICOM headers where missing."""
    filled = 0
    out = []
    for record in records:
        missing = record.group is None or (need_views and record.view is None)
        if record.pixels is None and missing and _maybe_dicom(record.file):
            tags = dicom_tags(root / record.file)
            if tags is not None:
                record = dataclasses.replace(record, group=record.group or tags.patient, view=record.view or tags.view)
                filled += 1
        out.append(record)
    if filled:
        log.info("read PatientID and ViewPosition from %d DICOM headers", filled)
    return out


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
