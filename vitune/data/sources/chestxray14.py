"""``chestxray14`` SOURCE: the NIH ChestX-ray14 release layout.

::

    SOURCE/
      Data_Entry_2017_v2020.csv    (or Data_Entry_2017.csv): "Image Index", "Finding Labels", "Patient ID", ...
      images/00000001_000.png ...  (or images_001/images/..., images_002/images/... as the tarballs unpack)
      train_val_list.txt, test_list.txt   (optional: the official patient-wise split)

Labels are the 14 findings in their canonical order, always all 14 (a subset lacking some still
has 14 outputs). "No Finding" is an empty label list (an all-zero row) unless
``no_finding_as_label``, which adds it as a 15th label. ``group`` is the Patient ID (or
``--group-column``). With both lists present, images in ``test_list.txt`` are ``test`` and those
in ``train_val_list.txt`` are ``train`` (``official_split``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from vitune.data.metadata import normalise_view, record_metadata
from vitune.data.sources.base import ListingTracker, Record, Skipped, SourceOptions, SourceRows
from vitune.data.sources.csv_source import read_table, require_column
from vitune.data.sources.files import ListedFileError, SourceFiles
from vitune.errors import UserError
from vitune.tasks import MULTI_LABEL

log = logging.getLogger(__name__)

FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"
ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
IMAGE_COLUMN = "Image Index"
FINDINGS_COLUMN = "Finding Labels"
PATIENT_COLUMN = "Patient ID"
VIEW_COLUMN = "View Position"
SEX_COLUMN = "Patient Gender"
AGE_COLUMN = "Patient Age"
TRAIN_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"


def entry_file(root: Path) -> Path | None:
    """The release's label CSV in ``root`` (the 2020 revision first), or None."""
    for name in ENTRY_FILES:
        if (root / name).is_file():
            return root / name
    found = sorted(root.glob("Data_Entry_2017*.csv"))
    return found[0] if found else None


def require_entry_file(root: Path) -> Path:
    """The release's label CSV in ``root``; a missing one is a UserError that says what to download."""
    entries_path = entry_file(root)
    if entries_path is None:
        raise UserError(f"{root} has no {ENTRY_FILES[0]} (or {ENTRY_FILES[1]}): download it beside images/")
    return entries_path


def parse_findings(text: str, no_finding_as_label: bool) -> list[str]:
    """The findings of one "Finding Labels" cell; raises ValueError with the skipped reason."""
    names = [part.strip() for part in (text or "").split("|") if part.strip()]
    if not names:
        raise ValueError("missing label")
    if NO_FINDING in names:
        if len(names) > 1:
            raise ValueError(f"'{NO_FINDING}' together with findings")
        return [NO_FINDING] if no_finding_as_label else []
    for name in names:
        if name not in FINDINGS:
            raise ValueError(f"unknown finding '{name}'")
    return names


def read(root: Path | str, options: SourceOptions) -> SourceRows:
    """Read a ChestX-ray14 release folder into multi-label records (see the module docstring)."""
    root = Path(root)
    entries_path = require_entry_file(root)
    table = read_table(entries_path)
    name = entries_path.name
    for column in (IMAGE_COLUMN, FINDINGS_COLUMN):
        require_column(name, table.columns, column, "ChestX-ray14 release column")
    group_column = options.group_column or PATIENT_COLUMN
    require_column(name, table.columns, group_column, "--group-column")

    locator = ImageLocator(root)
    splits = official_splits(root)
    records: list[Record] = []
    skipped: list[Skipped] = []
    listings = ListingTracker(name)
    views, sexes, ages = (table.column(column if column in table.columns else None)
                          for column in (VIEW_COLUMN, SEX_COLUMN, AGE_COLUMN))
    rows = zip(table.lines, table.column(IMAGE_COLUMN), table.column(FINDINGS_COLUMN), table.column(group_column), views,
               sexes, ages)
    for line, listed, findings, group, view, sex, age in rows:
        try:
            file = locator.locate(listed)
            labels = parse_findings(findings, options.no_finding_as_label)
        except ListedFileError as exc:
            skipped.append(Skipped(listed or f"{name} line {line}", exc.reason))
            continue
        except ValueError as exc:
            skipped.append(Skipped(file, str(exc)))
            continue
        if (repeat := listings.repeat(file, line)) is not None:
            skipped.append(repeat)
            continue
        split = splits.get(posix_name(listed)) if splits else None
        records.append(Record(file=file, raw_label=labels, group=group or None, split=split, view=normalise_view(view),
                              meta=record_metadata(sex, age)))
    label_order = [*FINDINGS, NO_FINDING] if options.no_finding_as_label else list(FINDINGS)
    log.info("ChestX-ray14 %s: %d rows, %d images found, %d skipped; %s", name, len(table.rows), len(records),
             len(skipped), "official train/test lists" if splits else "no official lists")
    return SourceRows(
        format="chestxray14",
        records=records,
        skipped=skipped,
        label_order=label_order,
        task=MULTI_LABEL.name,
        official_split=bool(splits),
    )


def posix_name(listed: str) -> str:
    """The file name part of a listed image (the official lists hold bare names)."""
    return listed.replace("\\", "/").rsplit("/", 1)[-1]


def official_splits(root: Path) -> dict[str, str]:
    """``{image name: "train" | "test"}`` from the official lists when both are present, else ``{}``."""
    train_list, test_list = root / TRAIN_LIST, root / TEST_LIST
    if not (train_list.is_file() and test_list.is_file()):
        if train_list.is_file() or test_list.is_file():
            log.warning("only one of %s and %s is present: ignoring it, splitting by patient", TRAIN_LIST, TEST_LIST)
        return {}
    splits = {name: "train" for name in _names(train_list)}
    splits.update({name: "test" for name in _names(test_list)})
    return splits


def _names(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig") as handle:
        return [line.strip() for line in handle if line.strip()]


class ImageLocator:
    """Finds a listed image in ``images/`` or any ``images_NNN/images/`` folder, each listed once."""

    def __init__(self, root: Path):
        self.files = SourceFiles(root)
        self.folders = [
            folder
            for folder in ["images", *sorted(f"{d}/images" for d in _subfolders(root) if d.startswith("images_"))]
            if (root / folder).is_dir()
        ]

    def locate(self, listed: str) -> str:
        """The path relative to SOURCE of a listed image; raises ListedFileError (missing, unsafe)."""
        if "/" in listed or "\\" in listed:
            return self.files.locate(listed)
        for folder in self.folders:
            if listed in self.files.files_in(folder):
                return self.files.locate(listed, folder)
        self.files.normalise(listed)  # an empty, absolute or escaping name says so rather than "missing file"
        raise ListedFileError("missing file")


def _subfolders(root: Path) -> list[str]:
    with os.scandir(root) as scan:
        return [entry.name for entry in scan if entry.is_dir(follow_symlinks=False)]
