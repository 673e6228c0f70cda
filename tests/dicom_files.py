"""Minimal DICOM files for the tests, written with pydicom: a dense square on a background."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIDE = 64


def phantom(dense: float, background: float) -> np.ndarray:
    """A square of dense tissue (``dense``) in the middle of ``background``."""
    values = np.full((SIDE, SIDE), background, dtype=np.float64)
    values[16:48, 16:48] = dense
    return values


def secondary_capture():
    """An empty secondary-capture pydicom ``Dataset`` with its file meta, in explicit VR little endian."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    return ds


def write_dicom(path: Path, stored: np.ndarray, bits: int = 12, signed: bool = False, photometric="MONOCHROME2",
                window: tuple[float, float] | None = None, rescale: tuple[float, float] | None = None,
                patient: str = "P1", view: str = "PA", rle: bool = False, pixels: bool = True,
                sex: str | None = None, age: str | None = None) -> Path:
    """A minimal secondary-capture DICOM written with pydicom."""
    from pydicom.uid import RLELossless

    ds = secondary_capture()
    ds.PatientID, ds.ViewPosition, ds.Modality = patient, view, "DX"
    if sex is not None:
        ds.PatientSex = sex
    if age is not None:
        ds.PatientAge = age
    if pixels:
        ds.Rows, ds.Columns, ds.SamplesPerPixel = *stored.shape, 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = (8, 8, 7) if bits == 8 else (16, bits, bits - 1)
        ds.PixelRepresentation = int(signed)
        dtype = np.uint8 if bits == 8 else (np.int16 if signed else np.uint16)
        ds.PixelData = stored.astype(dtype).tobytes()
        if window:
            ds.WindowCenter, ds.WindowWidth = window
        if rescale:
            ds.RescaleSlope, ds.RescaleIntercept = rescale
        if rle:
            ds.compress(RLELossless)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
