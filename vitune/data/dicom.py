"""DICOM files: pixels as a radiologist's viewer shows them, and the tags a dataset needs.

Decoding follows the standard's display pipeline, on pydicom: the modality LUT (RescaleSlope /
RescaleIntercept), then the VOI LUT or window (WindowCenter / WindowWidth) when the file has one,
else the image's own value range (min to max), as viewers do; MONOCHROME1 (stored inverted) is inverted
back, so dense tissue comes out bright. Compressed transfer syntaxes (RLE, JPEG lossless,
JPEG 2000) decode through pydicom's pixel handlers (pylibjpeg and its plugins). A file without
pixel data (a structured report), an unsupported or a damaged one is a :class:`BadImage` with its
reason. :func:`dicom_tags` reads PatientID, ViewPosition, PatientSex and PatientAge without touching the pixels.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DICM_OFFSET = 128  # the 128-byte preamble, then b"DICM"
MAGIC = b"DICM"
SUFFIXES = frozenset({".dcm", ".dicom"})


class BadDicom(ValueError):
    """A DICOM that cannot be used; :mod:`vitune.data.images` turns it into a BadImage."""


def is_dicom(data: bytes) -> bool:
    """Whether ``data`` starts like a DICOM Part 10 file (the ``DICM`` magic after the preamble)."""
    return data[DICM_OFFSET : DICM_OFFSET + 4] == MAGIC


def is_dicom_file(path: Path | str) -> bool:
    """Whether the file at ``path`` carries the DICOM magic (for files without an extension)."""
    try:
        with open(path, "rb") as handle:
            return is_dicom(handle.read(DICM_OFFSET + 4))
    except OSError:
        return False


def _read(data: bytes):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError) as exc:
        raise BadDicom(f"damaged DICOM: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc


def _pixels(dataset) -> np.ndarray:
    if "PixelData" not in dataset:
        raise BadDicom("DICOM without pixel data (a report or a structured document, not an image)")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    try:
        if frames > 1:
            dataset.pixel_array_options(index=0)  # a multi-frame file: decode its first frame only
        array = dataset.pixel_array
    except (NotImplementedError, RuntimeError) as exc:  # no handler for this transfer syntax
        raise BadDicom(f"unsupported DICOM encoding ({dataset.file_meta.TransferSyntaxUID.name}): {exc}") from exc
    except (ValueError, EOFError, AttributeError, KeyError) as exc:  # truncated or inconsistent pixel data
        raise BadDicom(f"damaged DICOM pixel data: {str(exc).splitlines()[0]}") from exc
    return array


def _first(value) -> float:
    """A window value, which may be multi-valued (one per alternative window): the first."""
    from pydicom.multival import MultiValue

    return float(value[0]) if isinstance(value, MultiValue) else float(value)


def _window(values: np.ndarray, dataset) -> np.ndarray | None:
    """The VOI LUT or window of the file mapped to [0, 1] (PS3.3 C.11.2.1.2-3), or None without one."""
    if dataset.get("VOILUTSequence"):
        from pydicom.pixels import apply_voi_lut

        out = apply_voi_lut(np.rint(values).astype(np.int64), dataset, index=0, prefer_lut=True).astype(np.float64)
        # LUTDescriptor declares the output bits, but vendors often declare 16 for a 12-bit LUT
        return out / (2.0 ** max(8, int(np.ceil(np.log2(max(float(out.max()), 1.0) + 1.0)))) - 1)
    if dataset.get("WindowCenter") in (None, "") or dataset.get("WindowWidth") in (None, ""):
        return None
    center, width = _first(dataset.WindowCenter), max(_first(dataset.WindowWidth), 1.0)
    function = str(dataset.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    return np.clip((values - (center - 0.5)) / max(width - 1, 1e-12) + 0.5, 0.0, 1.0)


def _own_range(values: np.ndarray) -> np.ndarray:
    """The image's own value range mapped to [0, 1], as viewers show a file with no VOI LUT and no window.

    The range BitsStored could hold would leave a film that fills part of it nearly flat (a signed
    16-bit film spanning +-1500 got 7 grey levels between tissue and background). A constant image is 0.
    """
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def _to_8bit_gray(dataset, array: np.ndarray) -> np.ndarray:
    """Modality LUT, then the VOI LUT / window or the image's own range, to 0-255; MONOCHROME1 inverted."""
    from pydicom.pixels import apply_modality_lut

    values = apply_modality_lut(array, dataset).astype(np.float64)
    unit = _window(values, dataset)
    if unit is None:
        unit = _own_range(values)
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        unit = 1.0 - unit
    return (unit * 255.0 + 0.5).astype(np.uint8)


def dicom_to_image(data: bytes, max_pixels: int) -> Image.Image:
    """A DICOM file's first image as an 8-bit PIL image (``L`` for grayscale, ``RGB`` for colour)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's complaints about odd values: the outcome says it all
            return _dicom_to_image(data, max_pixels)
    except BadDicom:
        raise
    except Exception as exc:  # pydicom parses elements lazily: a damaged one raises any type when read
        raise BadDicom(f"damaged DICOM: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


def _dicom_to_image(data: bytes, max_pixels: int) -> Image.Image:
    dataset = _read(data)
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    if rows * columns > max_pixels:  # refused before any pixel is decoded
        raise BadDicom(f"decompression bomb: {columns}x{rows} pixels exceeds {max_pixels}")
    array = _pixels(dataset)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric.startswith("MONOCHROME"):
        return Image.fromarray(_to_8bit_gray(dataset, array), "L")
    if array.ndim != 3 or array.shape[-1] != 3:
        raise BadDicom(f"unsupported DICOM photometric interpretation {photometric}")
    bits = int(dataset.get("BitsStored", 8) or 8)
    return Image.fromarray(np.clip(array.astype(np.float64) / (2**bits - 1) * 255.0 + 0.5, 0, 255).astype(np.uint8),
                           "RGB")


@dataclass(frozen=True)
class DicomTags:
    """What a dataset takes from a DICOM header: the patient (group), the view (PA, AP, LL...), and the
    patient's sex and age as written (PatientSex, PatientAge such as ``045Y``)."""

    patient: str | None
    view: str | None
    sex: str | None = None
    age: str | None = None


def dicom_tags(path: Path | str) -> DicomTags | None:
    """PatientID, ViewPosition, PatientSex and PatientAge of the DICOM at ``path`` (header only), or None if it is not one.

    Only the header is read from disk: a dataset of large DICOMs is not read twice.
    """
    import pydicom

    if not is_dicom_file(path):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, stop_before_pixels=True,
                                      specific_tags=["PatientID", "ViewPosition", "PatientSex", "PatientAge"])
        patient, view, sex, age = (str(dataset.get(keyword, "") or "").strip() or None
                                   for keyword in ("PatientID", "ViewPosition", "PatientSex", "PatientAge"))
    except Exception:  # a damaged header: no tags (decoding the file reports the damage)
        return None
    return DicomTags(patient, view.upper() if view else None, sex, age)
