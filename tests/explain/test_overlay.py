"""Overlay panels a reader can see: the source scaled up sharp, the map beside it, a colour bar, no text."""

import numpy as np
from PIL import Image

from vitune.explain.overlay import GAP, MIN_WIDTH, colour_bar, display_scale, overlay


def test_small_source_is_scaled_up_by_a_whole_factor_without_blur():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    heatmap = np.zeros((4, 4), np.float32)
    heatmap[1, 2] = 1.0

    panel = overlay(Image.fromarray(pixels), heatmap)

    assert display_scale(64) == 4 and display_scale(224) == 1 and display_scale(1000) == 1
    side = 64 * 4
    bar_width = colour_bar(side).width
    assert panel.size == (2 * side + bar_width + 2 * GAP, side)
    left = np.asarray(panel)[:, :side]
    assert np.array_equal(left, pixels.repeat(4, axis=0).repeat(4, axis=1))  # nearest: every pixel a 4x4 square

    gray = overlay(Image.new("RGB", (64, 64), (128, 128, 128)), heatmap)
    right = np.asarray(gray)[:, side + GAP : 2 * side + GAP].astype(int)
    hot = right[side // 4 + side // 8 - 20, side // 2 + side // 8]  # inside the hot cell, off the peak's ring
    cold = right[side - 5, 5]
    assert hot[0] > 128 + 40 and hot[2] < 128 - 40  # red where the map is high
    assert cold.tolist() == [128, 128, 128]  # zero weight where the map is lowest: the source shows through


def test_wide_source_keeps_its_size_and_the_bar_runs_high_to_low():
    source = Image.new("RGB", (300, 200), (128, 128, 128))
    panel = overlay(source, np.ones((2, 3), np.float32), at=(10.0, 10.0))
    bar = np.asarray(colour_bar(200)).astype(int)
    assert panel.height == 200 and panel.width == 2 * 300 + bar.shape[1] + 2 * GAP
    assert bar[0, 0, 0] > bar[0, 0, 2] and bar[-1, 0, 2] > bar[-1, 0, 0]  # red on top, blue at the bottom
    assert np.array_equal(np.asarray(panel)[:, :300], np.asarray(source))
    assert MIN_WIDTH == 224
