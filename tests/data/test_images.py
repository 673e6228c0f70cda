"""Safe decoding: exact pixel values for 16-bit, RGBA, grayscale; bad files rejected with reasons."""

import io

import numpy as np
import pytest
from PIL import Image

from vitune.data import images
from vitune.data.images import BadImage, decode_image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_16bit_is_scaled_not_clipped():
    array = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    out = decode_image(_png(Image.fromarray(array)), 2)
    assert out.shape == (3, 2, 2) and out.dtype == np.uint8
    assert out[0].tolist() == [[0, 255], [128, 4]]
    assert (out[0] == out[1]).all() and (out[1] == out[2]).all()


def test_rgba_is_flattened_on_white_and_grayscale_expanded():
    rgba = Image.new("RGBA", (1, 1), (0, 0, 0, 0))
    assert decode_image(_png(rgba), 1)[:, 0, 0].tolist() == [255, 255, 255]
    half = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    assert decode_image(_png(half), 1)[:, 0, 0].tolist() == [127, 127, 127]
    gray = Image.new("L", (1, 1), 77)
    assert decode_image(_png(gray), 1)[:, 0, 0].tolist() == [77, 77, 77]


def test_resize_to_square():
    out = decode_image(_png(Image.new("RGB", (40, 20), (10, 20, 30))), 8)
    assert out.shape == (3, 8, 8)
    assert out[:, 4, 4].tolist() == [10, 20, 30]


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"", "empty file"),
        (b"this is not an image", "unreadable image: not a recognised image format"),
    ],
)
def test_bad_bytes_rejected(payload, reason):
    with pytest.raises(BadImage) as info:
        decode_image(payload, 8)
    assert info.value.reason.startswith(reason)


def test_truncated_png_rejected():
    data = _png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)))
    with pytest.raises(BadImage) as info:
        decode_image(data[: len(data) // 2], 8)
    assert "truncated" in info.value.reason or "unreadable" in info.value.reason


def test_decompression_bomb_rejected(monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(BadImage, match="decompression bomb"):
        decode_image(_png(Image.new("L", (20, 20))), 8)
