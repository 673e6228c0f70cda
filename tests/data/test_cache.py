"""The pixel cache: exact decoded values, bad images skipped with reasons, fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image
from sample_images import write_known_images

from vitune.data.cache import CacheItem, build_cache, check_out_dir, source_fingerprint
from vitune.errors import UserError
from vitune.storage.atomic import replace_dir, staging_dir


def _items(files: dict[str, Path], names, split="train") -> list[CacheItem]:
    return [CacheItem(file=files[n].name, label=i % 2, group=f"g{i}", split=split, path=str(files[n]))
            for i, n in enumerate(names)]


@pytest.mark.parametrize("workers", [1, 2])
def test_build_cache_decodes_exact_pixels_and_skips_bad_images(tmp_path, workers):
    files = write_known_images(tmp_path / "src")
    items = _items(files, ["gray16", "rgba", "empty", "gray8", "truncated", "bomb"])
    items.append(CacheItem(file="mem.png", label=1, group=None, split="validation",
                           pixels=np.full((2, 2, 3), 7, dtype=np.uint8)))
    result = build_cache(items, tmp_path / "stage", "single_label", 4, workers=workers)

    assert result.splits == {"train": 3, "validation": 1}
    reasons = {s.file: s.reason for s in result.skipped}
    assert reasons["empty.png"] == "empty file"
    assert reasons["truncated.png"] == "truncated image"
    assert reasons["bomb.png"].startswith("decompression bomb")
    ds = datasets.load_from_disk(str(tmp_path / "stage" / "dataset")).with_format("numpy")
    train = ds["train"]
    assert list(train["file"]) == ["gray16.png", "rgba.png", "gray8.png"]
    assert list(train["labels"]) == [0, 1, 1]
    gray16, rgba, gray8 = (train[i]["pixel_values"] for i in range(3))
    assert train.features["pixel_values"].dtype == "uint8" and gray16.shape == (3, 4, 4)
    assert gray16[:, 0, 0].tolist() == [128, 128, 128] and gray16[:, 1, 1].tolist() == [255, 255, 255]
    assert rgba[:, 0, 0].tolist() == [200, 0, 0] and rgba[:, 2, 2].tolist() == [255, 255, 255]
    expected = (np.arange(16).reshape(4, 4) * 10).astype(np.uint8)
    assert all((gray8[c] == expected).all() for c in range(3))
    assert ds["validation"][0]["pixel_values"].tolist() == np.full((3, 4, 4), 7).tolist()
    assert "test" not in ds


def test_grayscale_source_is_stored_with_one_channel(tmp_path):
    files = write_known_images(tmp_path / "src")
    files["gray_as_rgb"] = tmp_path / "src" / "gray_as_rgb.png"  # an RGB file whose channels are equal is gray
    Image.fromarray(np.full((4, 4, 3), 90, dtype=np.uint8), "RGB").save(files["gray_as_rgb"])
    build_cache(_items(files, ["gray16", "gray8", "gray_as_rgb"]), tmp_path / "stage", "single_label", 4, workers=1)
    train = datasets.load_from_disk(str(tmp_path / "stage" / "dataset"))["train"].with_format("numpy")
    assert train.features["pixel_values"].shape == (1, 4, 4)
    assert train[0]["pixel_values"][0, 0, 0] == 128
    assert (train[1]["pixel_values"][0] == (np.arange(16).reshape(4, 4) * 10)).all()
    assert (train[2]["pixel_values"] == 90).all()


def _build_into(out, *args, **kwargs):
    """build_cache in a staging folder, then renamed into place as prepare does."""
    with staging_dir(out) as staging:
        result = build_cache(_items(*args[:2]), staging, *args[2:], **kwargs)
        replace_dir(staging / "dataset", out)
    return result


def test_build_cache_resizes_and_replaces_a_previous_dataset(tmp_path):
    files = write_known_images(tmp_path / "src")
    out = tmp_path / "out"
    _build_into(out, files, ["gray8", "gray16"], "single_label", 4, workers=1)
    (out / "dataset.json").write_text("{}")
    result = _build_into(out, files, ["gray8"], "single_label", 8, workers=1)
    ds = datasets.load_from_disk(str(out))
    assert result.splits == {"train": 1} and ds["train"].num_rows == 1
    assert np.asarray(ds["train"].with_format("numpy")[0]["pixel_values"]).shape == (1, 8, 8)  # gray: one channel
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # staging and the old copy removed


def test_all_images_bad_is_a_user_error_and_keeps_the_previous_dataset(tmp_path):
    files = write_known_images(tmp_path / "src")
    out = tmp_path / "out"
    _build_into(out, files, ["gray8"], "single_label", 4, workers=1)
    with pytest.raises(UserError, match="none of the 2 images could be decoded"):
        _build_into(out, files, ["empty", "bomb"], "single_label", 4, workers=2)
    assert datasets.load_from_disk(str(out))["train"].num_rows == 1


def test_fingerprint_tracks_listing_and_settings(tmp_path):
    files = write_known_images(tmp_path / "src")
    source = str(tmp_path / "src")
    first = source_fingerprint(source, {"image_size": 224})
    assert source_fingerprint(source, {"image_size": 224}) == first
    assert source_fingerprint(source, {"image_size": 384}) != first
    stat = files["gray8"].stat()
    os.utime(files["gray8"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = source_fingerprint(source, {"image_size": 224})
    assert touched != first
    (tmp_path / "src" / "new.png").write_bytes(files["gray8"].read_bytes())
    assert source_fingerprint(source, {"image_size": 224}) not in (first, touched)


def test_out_dir_checks(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(UserError, match="inside SOURCE"):
        check_out_dir(tmp_path / "src" / "ds", str(tmp_path / "src"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        check_out_dir(tmp_path / "busy", str(tmp_path / "src"))
    check_out_dir(tmp_path / "new", str(tmp_path / "src"))
