"""Safe image decoding: any file PIL reads -> RGB uint8 ``[3, S, S]`` (or gray ``[1, S, S]``), resized once.

Guards: a cap on pixel count (decompression bombs), the file's own integrity checks (PNG chunk
CRCs, through PIL's ``verify()``: a bit-flipped PNG can still decode into wrong pixels), truncated
and empty files rejected rather than half-decoded, 16-bit images scaled to 8 bits (not clipped),
alpha composited on white, grayscale and palette images expanded to RGB, a camera's EXIF
orientation applied.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from vitune.data.dicom import BadDicom, dicom_to_image, is_dicom

# 1024x1024 NIH scans are 1 Mpx; 16k x 16k still fits, anything larger is refused as a bomb.
MAX_IMAGE_PIXELS = 16384 * 16384
ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadImage(ValueError):
    """An image that cannot be used; ``reason`` is the short text reported in ``skipped``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _open(source: Path | bytes, verify: bool = True) -> Image.Image:
    data = source.read_bytes() if isinstance(source, Path) else source
    if not data:
        raise BadImage("empty file")
    if is_dicom(data):
        try:
            return dicom_to_image(data, MAX_IMAGE_PIXELS)
        except BadDicom as exc:
            raise BadImage(str(exc)) from exc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # PIL's complaints about a damaged file are kept, not printed
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            _check_pixel_count(image)
            if verify:
                _verify(data)
            image.load()
        except BadImage:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadImage(f"decompression bomb: {exc}") from exc
        except UnidentifiedImageError as exc:  # its text names an in-memory buffer, useless to the user
            raise BadImage("unreadable image: not a recognised image format") from exc
        except OSError as exc:
            text = str(exc)
            reason = "truncated image" if "truncated" in text.lower() else f"unreadable image: {text}"
            raise BadImage(reason) from exc
        except (ValueError, SyntaxError) as exc:  # PIL raises these for some corrupt headers
            raise BadImage(f"unreadable image: {exc}") from exc
        if any("truncated" in str(warning.message).lower() for warning in caught):  # e.g. a TIFF cut short
            raise BadImage("truncated image")
        image.info[SIGNIFICANT_BITS] = png_significant_bits(data)
        return upright(image)


EXIF_ORIENTATION = 0x0112


# EXIF orientation -> the transposition that shows the image upright (as ImageOps.exif_transpose)
ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def upright(image: Image.Image) -> Image.Image:
    """The image as a viewer shows it: a camera's EXIF orientation applied.

    Only the orientation value is read (the EXIF block is never re-encoded); a damaged EXIF block
    is no orientation.
    """
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # PIL raises assorted types on a corrupt EXIF block; the pixels are still fine
        return image
    method = ORIENTATIONS.get(orientation) if isinstance(orientation, int) else None
    return image if method is None else image.transpose(method)


def _verify(data: bytes) -> None:
    """The format's own checks on a fresh parse (``verify()`` consumes the image it runs on)."""
    try:
        Image.open(io.BytesIO(data)).verify()
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        text = str(exc) or type(exc).__name__
        raise BadImage("truncated image" if "truncated" in text.lower() else f"damaged image: {text}") from exc


def _check_pixel_count(image: Image.Image) -> None:
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise BadImage(f"decompression bomb: {width}x{height} pixels exceeds {MAX_IMAGE_PIXELS}")


SIGNIFICANT_BITS = "vitune_significant_bits"  # image.info key: a PNG's sBIT, when it has one
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_significant_bits(data: bytes) -> int | None:
    """The bit depth a PNG's ``sBIT`` chunk declares (12 for 12-bit scans stored in 16), or None."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if position + 12 + length > len(data):
            return None
        if kind == b"sBIT" and length >= 1:
            bits = max(data[position + 8 : position + 8 + min(length, 4)])
            return bits if 1 <= bits <= 16 else None
        if kind in (b"IDAT", b"IEND"):
            return None
        position += 12 + length
    return None


def _peak(image: Image.Image, array: np.ndarray) -> float:
    """The value that means white: 2^sBIT - 1, else the highest value rounded up to 2^k - 1 (k >= 8).

    An sBIT below the data's own highest value means an encoder scaled the samples up to 16 bits,
    as the PNG specification asks: then white is 65535.
    """
    highest = max(float(array.max()), 0.0) if array.size else 0.0
    bits = image.info.get(SIGNIFICANT_BITS)
    if bits and highest > 2**bits - 1:
        return 65535.0
    if not bits:
        bits = max(8, int(np.ceil(np.log2(highest + 1.0))))
    return float(2**bits - 1)


def to_8bit(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit ``L`` or ``RGB`` (16-bit scaled by its real bit depth, float stretched,
    alpha flattened on white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(array / _peak(image, array) * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        lo, hi = float(array.min()), float(array.max())
        scaled = (array - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(array)
        image = Image.fromarray(scaled.astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode == "L" else image.convert("RGB")


def decode_image(source: Path | bytes, image_size: int, verify: bool = True, keep_gray: bool = False) -> np.ndarray:
    """Decode ``source`` (a file or its bytes) to a uint8 array ``[3, image_size, image_size]``.

    Raises :class:`BadImage` with a short reason for empty, damaged, truncated, unreadable or
    oversized input. ``verify=False`` skips the integrity pass (``bench/data_throughput.py`` times it).
    ``keep_gray``: a grayscale image (or an RGB one whose channels are equal) comes back as ``[1, S, S]``.
    """
    return pil_to_array(_open(source, verify), image_size, keep_gray)


def read_image(source: Path | bytes, verify: bool = True) -> Image.Image:
    """``source`` (a file or its bytes) opened with :func:`decode_image`'s checks, upright, not resized.

    For callers that need the image at its own size too (``vitune explain`` draws on it); pass
    it to :func:`pil_to_array` for the model's pixels.
    """
    return _open(source, verify)


def pil_to_array(image: Image.Image, image_size: int, keep_gray: bool = False) -> np.ndarray:
    """Same as :func:`decode_image` for an already-open PIL image (HF datasets, CIFAR arrays)."""
    _check_pixel_count(image)
    try:
        image = to_8bit(image)
    except (ValueError, OverflowError, TypeError) as exc:  # pixel values PIL reads but nothing can show
        raise BadImage(f"unsupported pixel values ({image.mode}): {exc}") from exc
    if image.size != (image_size, image_size):
        # resized while still grayscale: a third of the work for X-rays, same pixels after expansion
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    if keep_gray and image.mode == "L":
        return np.asarray(image, dtype=np.uint8)[None].copy()
    pixels = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))
    if keep_gray and (pixels[0] == pixels[1]).all() and (pixels[1] == pixels[2]).all():
        return pixels[:1].copy()
    return pixels
