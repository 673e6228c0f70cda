"""Patient metadata kept beside each image: ``sex`` (M/F), ``age`` (whole years), ``view`` (PA, AP, LL...).

Sources name these columns differently: ChestX-ray14 "Patient Gender", "Patient Age", "View
Position"; CheXpert "Sex", "Age", "AP/PA"; MIMIC-CXR's metadata and DICOM headers "PatientSex",
"PatientAge" (``045Y``: the DICOM age string, PS3.5 AS) and "ViewPosition". The readers find the
column by any of these names and normalise the cells here, so a DATASET_DIR always holds ``sex`` as
``M``/``F``, ``age`` as an integer and ``view`` upper case. A cell that cannot be read is left empty
(None): a patient's missing age never drops the image. ``--meta-columns a,b`` keeps other columns
of a label CSV as text.
"""

from __future__ import annotations

import re

from vitune.config.commands import DEFAULT_AGE_EDGES
from vitune.tasks.subgroups import UNKNOWN_GROUP

SEX, AGE, VIEW = "sex", "age", "view"
STANDARD_COLUMNS = (SEX, AGE, VIEW)
# lower-cased source column names, per DATASET_DIR column (ChestX-ray14's, DICOM/MIMIC's, CheXpert's, plain)
SEX_COLUMN_NAMES = ("patient gender", "patientsex", "sex", "gender")
AGE_COLUMN_NAMES = ("patient age", "patientage", "age")
SEX_CODES = {"m": "M", "male": "M", "f": "F", "female": "F"}
DICOM_AGE = re.compile(r"^(\d{1,3})\s*([DWMY])$", re.IGNORECASE)  # PS3.5 AS: nnnD, nnnW, nnnM, nnnY
DAYS_PER_UNIT = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}
MAX_AGE = 130  # above this an age cell is a data error, not a patient


def normalise_sex(cell: str | None) -> str | None:
    """``M`` or ``F`` from "M", "male", "Female"...; None for an empty or other value ("O", "Unknown")."""
    if cell is None:
        return None
    return SEX_CODES.get(str(cell).strip().lower())


def parse_age(cell: str | float | None) -> int | None:
    """Whole years from "58", "58.0" or a DICOM age string ("045Y", "018M", "003W"); None when unreadable."""
    if cell is None:
        return None
    text = str(cell).strip()
    dicom = DICOM_AGE.match(text)
    if dicom:
        years = int(dicom.group(1)) * DAYS_PER_UNIT[dicom.group(2).upper()] / DAYS_PER_UNIT["Y"]
    else:
        try:
            years = float(text)
        except ValueError:
            return None
    if not 0 <= years <= MAX_AGE:
        return None
    return int(years)


def normalise_view(cell: str | None) -> str | None:
    """The view upper case ("pa" -> "PA"); None when empty."""
    if cell is None:
        return None
    return str(cell).strip().upper() or None


def record_metadata(sex: str | None, age: str | None, extra: dict[str, str] | None = None) -> dict:
    """The ``meta`` of one record: normalised sex and age, and ``extra`` (``--meta-columns``) cells as text."""
    meta: dict = {SEX: normalise_sex(sex), AGE: parse_age(age)}
    for column, cell in (extra or {}).items():
        meta[column] = str(cell).strip() or None
    return meta


def metadata_columns(records, extra_columns: list[str] | None) -> list[str]:
    """The metadata columns a DATASET_DIR keeps: the standard ones some record has, then ``extra_columns``."""
    present = []
    for column in STANDARD_COLUMNS:
        if any(_value(record, column) is not None for record in records):
            present.append(column)
    return [*present, *(extra_columns or [])]


def _value(record, column: str):
    if column == VIEW:
        return record.view
    return record.meta.get(column)


def row_metadata(record, columns: list[str]) -> dict:
    """The values of ``columns`` for one record, as the DATASET_DIR row stores them."""
    return {column: _value(record, column) for column in columns}


def age_bin_names(edges: tuple[int, ...] | list[int]) -> list[str]:
    """The names of the age bins cut at ``edges``: ``(40, 60, 80)`` -> ``0-39``, ``40-59``, ``60-79``, ``80+``."""
    lows = [0, *edges]
    names = [f"{low}-{high - 1}" for low, high in zip(lows, edges)]
    return [*names, f"{lows[-1]}+"]


def age_groups(ages, edges: tuple[int, ...] | list[int]) -> list[str]:
    """Each age's bin name (``unknown`` for a missing age)."""
    import numpy as np

    names = age_bin_names(edges)
    groups = []
    for age in ages:
        if age is None:
            groups.append(UNKNOWN_GROUP)
            continue
        groups.append(names[int(np.searchsorted(edges, age, side="right"))])
    return groups


def metadata_groups(column: str, values, age_edges: tuple[int, ...] | list[int] = DEFAULT_AGE_EDGES) -> list[str]:
    """The group each image falls in for ``column``: its age bin, or its value (``unknown`` when missing)."""
    if column == AGE:
        return age_groups(values, age_edges)
    return [UNKNOWN_GROUP if value is None else str(value) for value in values]
