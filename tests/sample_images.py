"""Image files with known pixels and known defects, shared by the data tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A tiny PNG whose header claims ``width x height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def write_known_images(root: Path) -> dict[str, Path]:
    """4x4 images with known pixels: 16-bit gray, RGBA, 8-bit gray, plus three broken files."""
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    gray16 = np.full((4, 4), 65535, dtype=np.uint16)
    gray16[0, 0] = 32768  # scaled: 32768 / 65535 * 255 = 127.5 -> 128; clipping would give 255
    files["gray16"] = root / "gray16.png"
    Image.fromarray(gray16).save(files["gray16"])
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 0  # fully transparent red over white -> white
    rgba[0, 0] = (200, 0, 0, 255)
    files["rgba"] = root / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(files["rgba"])
    gray8 = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    files["gray8"] = root / "gray8.png"
    Image.fromarray(gray8, "L").save(files["gray8"])
    files["empty"] = root / "empty.png"
    files["empty"].write_bytes(b"")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8), "L")
    noise.save(root / "noise.png")
    full = (root / "noise.png").read_bytes()
    files["truncated"] = root / "truncated.png"
    files["truncated"].write_bytes(full[: len(full) // 2])
    files["bomb"] = bomb_png(root / "bomb.png")
    return files


def write_dicom(path: Path, stored: np.ndarray, bits: int = 12, signed: bool = False, photometric="MONOCHROME2",
                window: tuple[float, float] | None = None, rescale: tuple[float, float] | None = None,
                patient: str = "P1", view: str = "PA", rle: bool = False, pixels: bool = True) -> Path:
    """A minimal secondary-capture DICOM written with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.ViewPosition, ds.Modality = patient, view, "DX"
    if pixels:
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel = 1
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
