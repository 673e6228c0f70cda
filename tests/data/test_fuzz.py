"""Property tests (Hypothesis) of the label readers and the image decoder on hostile input.

Properties: no exception escapes but a one-line :class:`UserError` for a file that cannot be
understood at all; every row is kept or skipped with a reason; a well-formed row is never lost; an
image decodes to the right shape or is refused with a reason, and a damaged PNG never decodes into
wrong pixels. ``bench/fuzz.py`` runs the same checks with many more inputs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from dicom_files import secondary_capture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vitune.data.images import BadImage, decode_image
from vitune.data.sources import read_source
from vitune.data.sources.base import SourceOptions
from vitune.errors import UserError
from vitune.tasks.label_space import infer_label_space
from vitune.tasks.labels import BadLabel

EXAMPLES = int(os.environ.get("VITUNE_FUZZ_EXAMPLES", "60"))  # bench/fuzz.py raises it
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
IMAGES = ("a.png", "b.png", "c d.png", "é.png")
WELL_FORMED_LABEL = st.sampled_from(["cat", "dog", "owl"]).flatmap(
    lambda name: st.tuples(st.sampled_from(["", " ", "  "]), st.sampled_from(["", " ", "\t"])).map(
        lambda pad: f"{pad[0]}{name}{pad[1]}"))
ANY_LABEL = st.one_of(WELL_FORMED_LABEL, st.text(max_size=12), st.sampled_from(["nan", "inf", "-inf", "1e400", ""]))
ANY_FILE = st.one_of(st.sampled_from(IMAGES), st.sampled_from(["missing.png", "../out.png", "/etc/passwd", ""]),
                     st.text(max_size=10))


def _source_with_images(root: Path) -> Path:
    for name in IMAGES:
        Image.new("RGB", (4, 4), (1, 2, 3)).save(root / name)
    return root


def check_rows_kept_or_skipped(rows, read, count_rows) -> None:
    """The properties of one reader on one table of ``rows`` (file, label, well-formed?)."""
    try:
        result = read()
    except UserError as exc:  # a table nothing can be read from: one line, allowed only without a usable row
        assert "\n" not in str(exc)
        assert not any(ok for _, _, ok in rows), f"a well-formed row was refused with the whole file: {exc}"
        return
    least, most = count_rows(result)  # rows with content must be accounted for; all-blank ones may be dropped
    assert least <= len(result.records) + len(result.skipped) <= most, "a row was neither kept nor skipped"
    assert all(s.reason for s in result.skipped)
    kept = {r.file for r in result.records}
    first_seen = set()
    for file, _, ok in rows:
        if ok and file not in first_seen:
            assert file in kept, f"well-formed row {file!r} was lost: {result.skipped}"
        first_seen.add(file)
    if result.records:
        _encode_all(result.records)


def _encode_all(records) -> None:
    """Labels are encoded or refused with a reason, never an exception."""
    try:
        space = infer_label_space([record.raw_label for record in records])
    except UserError:
        return
    for record in records:
        try:
            space.encode(record.raw_label)
        except BadLabel as exc:
            assert exc.reason


def _table_rows(rows, well_formed):
    return [(file, label, ok and file in IMAGES) for (file, label), ok in zip(rows, well_formed)]


@FUZZ
@given(rows=st.lists(st.tuples(ANY_FILE, ANY_LABEL), max_size=12), bom=st.booleans(),
       newline=st.sampled_from(["\n", "\r\n"]), quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
def test_label_csv(rows, bom, newline, quoting):
    with tempfile.TemporaryDirectory() as tmp:
        root = _source_with_images(Path(tmp))
        buffer = io.StringIO()
        writer = csv.writer(buffer, quoting=quoting, lineterminator=newline)
        writer.writerow(["image", "label"])
        writer.writerows(rows)
        (root / "labels.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode())
        labelled = [(f, lab, lab.strip() in ("cat", "dog", "owl")) for f, lab in rows]
        table_rows = _table_rows(rows, [ok for _, _, ok in labelled])
        options = SourceOptions(image_column="image", label_columns=["label"])
        check_rows_kept_or_skipped(table_rows, lambda: read_source(root / "labels.csv", "csv", options),
                                   lambda result: _csv_data_rows(root / "labels.csv"))


def _csv_data_rows(path: Path) -> tuple[int, int]:
    """(data rows with a non-blank cell, all data rows) as Python's csv module reads the file."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))[1:]
    return sum(1 for row in rows if any(cell.strip() for cell in row)), len(rows)


JSON_VALUE = st.one_of(WELL_FORMED_LABEL, st.lists(WELL_FORMED_LABEL, max_size=3), st.floats(allow_nan=True),
                       st.integers(), st.none(), st.text(max_size=8))


@FUZZ
@given(rows=st.lists(st.tuples(ANY_FILE, JSON_VALUE), max_size=10), garbage=st.lists(st.text(max_size=20), max_size=3),
       bom=st.booleans(), newline=st.sampled_from(["\n", "\r\n"]))
def test_metadata_jsonl(rows, garbage, bom, newline):
    with tempfile.TemporaryDirectory() as tmp:
        root = _source_with_images(Path(tmp))
        lines = [json.dumps({"file_name": f, "label": v}) for f, v in rows] + [g.replace("\n", " ") for g in garbage]
        (root / "metadata.jsonl").write_bytes((b"\xef\xbb\xbf" if bom else b"") + newline.join(lines).encode())
        well_formed = [isinstance(v, str) and v.strip() in ("cat", "dog", "owl") for _, v in rows]
        table_rows = _table_rows(rows, well_formed)
        check_rows_kept_or_skipped(table_rows, lambda: read_source(root, "imagefolder"),
                                   lambda result: _jsonl_rows(root / "metadata.jsonl"))


def _jsonl_rows(path: Path) -> tuple[int, int]:
    """(non-blank lines, all lines) as a text file reads them (universal newlines)."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        lines = list(handle)
    return sum(1 for line in lines if line.strip()), len(lines)


def _dicom() -> bytes:
    ds = secondary_capture()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 32, 48, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = (np.arange(32 * 48, dtype=np.uint16).reshape(32, 48) * 2).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _encoded(kind: str) -> bytes:
    if kind == "DICOM":
        return _dicom()
    image = Image.fromarray(np.arange(48 * 32 * 3, dtype=np.uint8).reshape(32, 48, 3))
    buffer = io.BytesIO()
    if kind == "GIF":
        image.convert("P").save(buffer, kind)
    else:
        image.save(buffer, kind)
    return buffer.getvalue()


FORMATS = ("PNG", "JPEG", "GIF", "TIFF", "WEBP", "BMP", "DICOM")
ORIGINALS = {kind: _encoded(kind) for kind in FORMATS}
PNG_PIXELS = decode_image(ORIGINALS["PNG"], 16)


def check_decode(data: bytes, kind: str | None) -> None:
    """An array of the right shape, or BadImage with a reason; a damaged PNG never gives wrong pixels."""
    try:
        pixels = decode_image(data, 16)
    except BadImage as exc:
        assert exc.reason and "\n" not in exc.reason
        return
    assert pixels.shape == (3, 16, 16) and pixels.dtype == np.uint8
    if kind == "PNG" and data != ORIGINALS["PNG"] and len(data) >= len(ORIGINALS["PNG"]):
        assert np.array_equal(pixels, PNG_PIXELS), "a damaged PNG decoded into other pixels"


def _jpeg_with_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 30, 30)).save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


EXIF_JPEG = _jpeg_with_exif()
EXIF_AT = EXIF_JPEG.index(b"Exif")


@FUZZ
@given(changes=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)), min_size=1, max_size=4))
def test_a_damaged_exif_block_never_escapes(changes):
    data = bytearray(EXIF_JPEG)
    for offset, value in changes:  # bytes inside the EXIF block (orientation tag, its count, offsets)
        data[EXIF_AT + 6 + offset] = value
    check_decode(bytes(data), None)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes_are_refused_with_a_reason(data):
    check_decode(data, None)


@FUZZ
@given(kind=st.sampled_from(FORMATS), cut=st.floats(0, 1), flips=st.lists(st.integers(0, 10**6), max_size=3))
def test_truncated_and_bit_flipped_images(kind, cut, flips):
    data = bytearray(ORIGINALS[kind])
    for position in flips:  # a flip past the 8-byte signature, inside the header or the pixels
        index = 8 + position % (len(data) - 8)
        data[index] ^= 1 << (position % 8)
    if cut < 0.9:  # most draws truncate too
        data = data[: max(1, math.floor(len(data) * cut))]
    check_decode(bytes(data), kind)
