"""A source as users really have them: 15 good encodings, damaged files and awkward CSV text, at once.

Every good image is kept, every damaged or refused row is skipped with its reason, no traceback.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

rng = np.random.default_rng(7)


def _gradient(width: int, height: int) -> np.ndarray:
    x = np.linspace(0, 255, width)[None, :] * np.ones((height, 1))
    return np.stack([x, x[::-1], np.full_like(x, 90)], axis=-1).astype(np.uint8)


def _save(image: Image.Image, path: Path, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)


def write_good_images(folder: Path) -> dict[str, str]:
    """15 good encodings -> their label."""
    rgb = Image.fromarray(_gradient(40, 30))
    good = {
        "png_gray.png": lambda p: _save(rgb.convert("L"), p),
        "png_rgb.png": lambda p: _save(rgb, p),
        "png_rgba.png": lambda p: _save(rgb.convert("RGBA"), p),
        "png_palette.png": lambda p: _save(rgb.convert("P", palette=Image.Palette.ADAPTIVE), p, transparency=0),
        "png_gray16.png": lambda p: _save(Image.fromarray((np.arange(1200).reshape(30, 40) * 50).astype(np.uint16)), p),
        "png_1bit.png": lambda p: _save(rgb.convert("1"), p),
        "jpeg_cmyk.jpg": lambda p: _save(rgb.convert("CMYK"), p, quality=90),
        "jpeg_progressive.jpg": lambda p: _save(rgb, p, progressive=True, quality=90),
        "webp.webp": lambda p: _save(rgb, p, quality=90),
        "tiff.tif": lambda p: _save(rgb, p),
        "animated.gif": lambda p: _save(rgb.convert("P"), p, save_all=True,
                                        append_images=[rgb.rotate(90).convert("P")], duration=100, loop=0),
        "jpeg_exif_rotated.jpg": lambda p: _save(rgb, p, exif=_orientation(6), quality=90),
        "one_pixel.png": lambda p: _save(Image.new("RGB", (1, 1), (10, 20, 30)), p),
        "very_wide.png": lambda p: _save(Image.fromarray(_gradient(2000, 3)), p),
        "café, scan 1.png": lambda p: _save(rgb, p),
    }
    for name, write in good.items():
        write(folder / "images" / name)
    return {name: ("finding" if i % 2 else "normal") for i, name in enumerate(good)}


def _orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def _bit_flipped_png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_gradient(64, 64)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT") + 4
    data[start + seed * 7 % 200] ^= 1 << (seed % 8)  # one bit inside the compressed pixels
    return bytes(data)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _bomb_header() -> bytes:
    """A small PNG claiming 100,000 x 100,000 pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + _chunk(b"IEND", b""))


def write_damaged_images(folder: Path) -> dict[str, str]:
    """Damaged files -> the start of the reason they must be skipped with."""
    full_png = (folder / "images" / "png_rgb.png").read_bytes()
    full_jpeg = (folder / "images" / "jpeg_progressive.jpg").read_bytes()
    damaged = {
        "empty.png": (b"", "empty file"),
        "random.png": (rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(), "unreadable image"),
        "page.jpg": (b"<!DOCTYPE html><html><body>404 not found</body></html>", "unreadable image"),
        "bomb.png": (_bomb_header(), "decompression bomb"),
        "half.png": (full_png[: len(full_png) // 2], "truncated image"),
        "half.jpg": (full_jpeg[: len(full_jpeg) // 2], "truncated image"),
        **{f"flipped{i}.png": (_bit_flipped_png(i), "damaged image") for i in range(4)},
    }
    for name, (data, _) in damaged.items():
        (folder / "images" / name).write_bytes(data)
    return {name: reason for name, (_, reason) in damaged.items()}


def write_awkward_csv(folder: Path, good: dict[str, str], damaged: dict[str, str]) -> dict[str, str]:
    """labels.csv with a BOM, CRLF, quoted commas and padded labels; refused rows -> their reason."""
    (folder / "outside.png").write_bytes((folder / "data" / "images" / "png_rgb.png").read_bytes())
    lines = ["image,label"]
    lines += [f'"images/{name}",  {label}  ' if "," in name else f"images/{name}, {label}" for name, label in good.items()]
    lines += [f"images/{name},normal" for name in damaged]
    refused = {
        "images/png_rgb.png": "listed twice",  # a duplicate of a good row (the first one is kept)
        "../outside.png": "path outside SOURCE",
        "/etc/hostname": "absolute path",
        "images/missing.png": "missing",
        "images/png_gray.png": "listed twice",
    }
    lines += ["images/png_rgb.png,finding", "../outside.png,normal", "/etc/hostname,normal",
              "images/missing.png,normal", '"images/png_gray.png","normal"']
    (folder / "data" / "labels.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    return refused


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    source = root / "data"
    good = write_good_images(source)
    damaged = write_damaged_images(source)
    refused = write_awkward_csv(root, good, damaged)
    return source, good, damaged, refused


def test_every_good_image_is_kept_and_every_bad_row_skipped_with_its_reason(mixed, tmp_path):
    source, good, damaged, refused = mixed
    done = subprocess.run([sys.executable, "-m", "vitune", "data", "prepare", str(source / "labels.csv"), "--out",
                           str(tmp_path / "ds"), "--image-size", "16", "--split", "random", "--workers", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    kept = sorted(f for split in ds for f in ds[split]["file"])
    assert kept == sorted(f"images/{name}" for name in good)  # every good image, each once
    info = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    skipped = {}
    for row in info["skipped"]:
        skipped.setdefault(row["file"], []).append(row["reason"])
    for name, reason in damaged.items():
        assert skipped[f"images/{name}"][0].startswith(reason), (name, skipped.get(f"images/{name}"))
    for file, reason in refused.items():
        assert any(reason in text for text in skipped[file]), (file, skipped.get(file))
    assert len(info["skipped"]) == len(damaged) + len(refused)
    assert sorted(info["labels"]) == ["finding", "normal"]


def test_exif_orientation_is_applied(mixed):
    from vitune.data.images import decode_image

    source, *_ = mixed
    upright = decode_image(source / "images" / "png_rgb.png", 16)
    rotated = decode_image(source / "images" / "jpeg_exif_rotated.jpg", 16)
    # orientation 6: the stored pixels are shown turned 90 degrees clockwise
    expected = np.rot90(upright, k=-1, axes=(1, 2))
    assert np.abs(rotated.astype(int) - expected.astype(int)).mean() < 12
