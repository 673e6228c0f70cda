"""DICOM and high-bit-depth inputs decode the way a viewer shows them."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sample_images import write_dicom

from vitune.data.dicom import dicom_tags, is_dicom_file
from vitune.data.images import BadImage, decode_image
from vitune.data.sources.files import is_image_file

SIDE = 64


def phantom(dense: float, background: float) -> np.ndarray:
    """A square of dense tissue (``dense``) in the middle of ``background``."""
    values = np.full((SIDE, SIDE), background, dtype=np.float64)
    values[16:48, 16:48] = dense
    return values


def bright_dense(pixels: np.ndarray) -> None:
    """Dense tissue bright, background dark, the full 0-255 range used."""
    gray = pixels[0].astype(float)
    assert gray[16:48, 16:48].mean() > 200 and gray[:8].mean() < 60, (gray[16:48, 16:48].mean(), gray[:8].mean())
    assert gray.max() - gray.min() > 200


def test_every_encoding_shows_dense_tissue_bright_with_full_contrast(tmp_path):
    cases = {
        "window12.dcm": dict(stored=phantom(3000, 1000), bits=12, window=(2000, 2000)),  # 12-bit with a window
        "monochrome1.dcm": dict(stored=phantom(100, 3900), bits=12, photometric="MONOCHROME1"),  # stored inverted
        "rescaled.dcm": dict(stored=phantom(3500, 100), bits=12, rescale=(2.0, -1024.0)),
        "plain8.dcm": dict(stored=phantom(250, 10), bits=8),
        "rle.dcm": dict(stored=phantom(3800, 200), bits=12, rle=True),
        "signed16.dcm": dict(stored=phantom(30000, -30000), bits=16, signed=True),
    }
    for name, settings in cases.items():
        bright_dense(decode_image(write_dicom(tmp_path / name, **settings), SIDE))


def test_dicom_without_pixels_or_truncated_is_refused_with_its_reason(tmp_path):
    report = write_dicom(tmp_path / "report.dcm", phantom(1, 0), pixels=False)
    with pytest.raises(BadImage, match="DICOM without pixel data"):
        decode_image(report, SIDE)
    full = write_dicom(tmp_path / "full.dcm", phantom(3000, 1000)).read_bytes()
    (tmp_path / "half.dcm").write_bytes(full[: len(full) - 3000])
    with pytest.raises(BadImage, match="damaged DICOM"):
        decode_image(tmp_path / "half.dcm", SIDE)


def test_files_without_extension_are_found_by_their_magic_and_tags_read(tmp_path):
    path = write_dicom(tmp_path / "IM0001", phantom(3000, 1000), patient="P42", view="AP ")
    (tmp_path / "README").write_text("not an image")
    assert is_dicom_file(path) and is_image_file(path) and not is_image_file(tmp_path / "README")
    assert dicom_tags(path).patient == "P42" and dicom_tags(path).view == "AP"
    assert dicom_tags(tmp_path / "README") is None


def test_pydicoms_own_files_decode_and_lossless_encodings_agree():
    from pydicom.data import get_testdata_file

    def decoded(name: str) -> np.ndarray:
        return decode_image(Path(get_testdata_file(name, download=False)), 32)

    reference = decoded("MR_small.dcm")  # a window, 16-bit signed
    for lossless in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm"):
        np.testing.assert_array_equal(decoded(lossless), reference)
    assert reference.max() == 255 and reference.min() < 80
    for name in ("CT_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm"):
        assert decoded(name).shape == (3, 32, 32)


def _with_sbit(png: bytes, bits: int) -> bytes:
    body = bytes([bits])
    chunk = struct.pack(">I", 1) + b"sBIT" + body + struct.pack(">I", zlib.crc32(b"sBIT" + body))
    ihdr_end = 8 + 12 + 13
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def test_12_bit_data_in_a_16_bit_png_is_scaled_by_its_real_depth():
    values = phantom(4095, 0).astype(np.uint16)  # 12-bit data: white is 4095, not 65535
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    for data in (buffer.getvalue(), _with_sbit(buffer.getvalue(), 12)):
        gray = decode_image(data, SIDE)[0]
        assert gray[16:48, 16:48].min() == 255 and gray[:8].max() == 0  # not 4095 / 65535 * 255 = 16
    darker = phantom(1999, 0).astype(np.uint16)  # no sBIT: the maximum rounded up to 2^11 - 1
    buffer = io.BytesIO()
    Image.fromarray(darker).save(buffer, "PNG")
    assert decode_image(buffer.getvalue(), SIDE)[0].max() == round(1999 / 2047 * 255)


def test_a_label_csv_of_dicoms_prepares_with_views_patients_and_reasons(tmp_path):
    import datasets

    from vitune.config import PrepareConfig
    from vitune.data import prepare

    root = tmp_path / "src"
    encodings = [dict(bits=12, window=(2000, 2000)), dict(bits=12, photometric="MONOCHROME1"),
                 dict(bits=12, rescale=(2.0, -1024.0)), dict(bits=8), dict(bits=12, rle=True),
                 dict(bits=16, signed=True)]
    views = ["PA", "AP", "LL"]
    rows = ["file,label"]
    for i in range(36):
        settings = encodings[i % len(encodings)]
        dense, background = (250, 10) if settings["bits"] == 8 else ((30000, -30000) if settings.get("signed") else (3900, 100))
        if settings.get("photometric") == "MONOCHROME1":
            dense, background = background, dense
        name = f"p{i // 3}/IM{i:03d}" + (".dcm" if i % 2 else "")  # PACS exports often have no extension
        write_dicom(root / name, phantom(dense, background), patient=f"P{i // 3}", view=views[i % 3], **settings)
        rows.append(f"{name},{'finding' if i % 4 else 'normal'}")
    write_dicom(root / "report.dcm", phantom(1, 0), pixels=False, view="PA", patient="P99")
    full = (root / "p0/IM001.dcm").read_bytes()
    (root / "half.dcm").write_bytes(full[: len(full) - 4000])
    rows += ["report.dcm,normal", "half.dcm,finding"]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")

    info = prepare(PrepareConfig(source=root / "labels.csv", out=tmp_path / "ds", image_size=32, views="PA,AP",
                                 val_fraction=0.2, test_fraction=0.2, workers=1))
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    kept = {f for split in ds for f in ds[split]["file"]}
    assert kept == {f"p{i // 3}/IM{i:03d}" + (".dcm" if i % 2 else "") for i in range(36) if i % 3 != 2}  # PA, AP
    assert info.views == {"kept": ["AP", "PA"], "dropped": {"LL": 12}}
    reasons = {row["file"]: row["reason"] for row in info.skipped}
    assert reasons["report.dcm"].startswith("DICOM without pixel data")
    assert reasons["half.dcm"].startswith("damaged DICOM")
    patients = {split: {f.split("/")[0] for f in ds[split]["file"]} for split in ds}  # the group is PatientID
    assert all(not (patients[a] & patients[b]) for a in patients for b in patients if a < b)
    assert set(ds["train"]["group"]) <= {f"P{i}" for i in range(12)}


def test_colour_dicoms_in_every_encoding_agree():
    from pydicom.data import get_testdata_file

    reference = decode_image(Path(get_testdata_file("SC_rgb_rle.dcm", download=False)), 100)
    assert reference[:, 5, 50].tolist() == [255, 0, 0]  # the red band at the top
    for name in ("SC_ybr_full_422_uncompressed.dcm", "SC_rgb_jpeg_dcmtk.dcm"):  # YBR converted once, not twice
        pixels = decode_image(Path(get_testdata_file(name, download=False)), 100)
        assert np.abs(pixels.astype(int) - reference.astype(int)).mean() < 6, name


def test_multi_frame_sigmoid_window_and_uid_names(tmp_path):
    from pydicom import dcmread

    path = write_dicom(tmp_path / "1.2.840.113619.2.55.3.1", phantom(3000, 1000), window=(2000, 1000))
    ds = dcmread(path)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData + np.full((SIDE, SIDE), 4000, dtype=np.uint16).tobytes()  # a second, white frame
    ds.VOILUTFunction = "SIGMOID"
    ds.save_as(path)
    assert is_image_file(path)  # a UID as the name: found by its magic
    gray = decode_image(path, SIDE)[0].astype(float)  # the first frame, through the sigmoid
    assert gray[16:48, 16:48].mean() == pytest.approx(255 / (1 + np.exp(-4.0)), abs=2)
    assert gray[:8].mean() == pytest.approx(255 / (1 + np.exp(4.0)), abs=2)


def test_sbit_of_samples_scaled_up_to_16_bits_and_unshowable_values():
    values = (phantom(2048, 0) * 16).astype(np.uint16)  # 12-bit mid grey scaled up to 16 bits, as the PNG spec asks
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    gray = decode_image(_with_sbit(buffer.getvalue(), 12), SIDE)[0]
    assert gray[16:48, 16:48].mean() == pytest.approx(2048 * 16 / 65535 * 255, abs=1)  # mid grey, not white
    negative = Image.fromarray(np.full((8, 8), -5, dtype=np.int32), "I")
    buffer = io.BytesIO()
    negative.save(buffer, "TIFF")
    pixels = decode_image(buffer.getvalue(), 8)  # shown (black) or refused with a reason, never a crash
    assert pixels.shape == (3, 8, 8) and pixels.max() == 0
