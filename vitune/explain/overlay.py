"""From a raw map to what people see: the peak in source pixels and the overlay image.

The model sees the source resized (not cropped) to ``S x S``, so a map cell ``(row, col)`` of an
``h x w`` map covers the source's ``[col, col + 1) * W / w`` by ``[row, row + 1) * H / h``. Peaks
are given in the source's pixel coordinates (x to the right, y down, the top-left corner at
``(0, 0)``, pixel ``i`` spanning ``[i, i + 1)``), refined below one cell by a parabola through the
peak and its neighbours on each axis.

An overlay image is a panel read left to right: the source, the same image under the coloured map
with a ring round its peak, and the colour bar (low at the bottom, high at the top). A source
narrower than :data:`MIN_WIDTH` is scaled up by a whole factor with nearest-neighbour sampling, so
its pixels stay sharp squares. No text is drawn on the pixels: the label, score and truth belong in
the caption of whatever shows the image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

OVERLAY_ALPHA = 0.55  # opacity of the heatmap where it is strongest
COLORMAP = "jet"
MIN_WIDTH = 224  # a smaller source is scaled up (nearest neighbour) so a reader can see the finding
GAP = 8  # white pixels between the source, the overlay and the colour bar


def _subcell_offset(before: float, at: float, after: float) -> float:
    """Vertex of the parabola through three samples, relative to the middle one, within half a cell."""
    curvature = before - 2.0 * at + after
    if curvature >= 0:  # flat or not a maximum: stay on the cell centre
        return 0.0
    return float(np.clip(0.5 * (before - after) / curvature, -0.5, 0.5))


def peak(heatmap: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """The map's maximum as ``(x, y)`` in the pixel coordinates of a ``width x height`` source."""
    rows, cols = heatmap.shape
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    dy = _subcell_offset(heatmap[row - 1, col], heatmap[row, col], heatmap[row + 1, col]) if 0 < row < rows - 1 else 0.0
    dx = _subcell_offset(heatmap[row, col - 1], heatmap[row, col], heatmap[row, col + 1]) if 0 < col < cols - 1 else 0.0
    return (round(float((col + 0.5 + dx) * width / cols), 1), round(float((row + 0.5 + dy) * height / rows), 1))


def scaled(heatmap: np.ndarray) -> np.ndarray:
    """The map stretched to [0, 1] (a constant map is all zeros)."""
    low, high = float(heatmap.min()), float(heatmap.max())
    return (heatmap - low) / (high - low) if high > low else np.zeros_like(heatmap, dtype=np.float32)


def display_scale(width: int) -> int:
    """The whole factor that brings a ``width``-pixel source to at least :data:`MIN_WIDTH` (1 when it is wide enough)."""
    return max(1, -(-MIN_WIDTH // max(1, width)))


def _colours(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as RGB floats in [0, 255] through :data:`COLORMAP`."""
    from matplotlib import colormaps

    return colormaps[COLORMAP](values)[..., :3] * 255.0


def colour_bar(height: int) -> Image.Image:
    """The colour bar of the map: :data:`COLORMAP` from low (bottom) to high (top), ``height`` pixels tall."""
    width = max(12, height // 16)
    values = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None].repeat(width, axis=1)
    return Image.fromarray(_colours(values).astype(np.uint8), "RGB")


def overlay(source: Image.Image, heatmap: np.ndarray, at: tuple[float, float] | None = None) -> Image.Image:
    """The panel: ``source``, beside it the source under the coloured heatmap with a ring round the peak
    ``at`` (source pixels; default: the map's own peak), and the colour bar."""
    base = source.convert("RGB")
    scale = display_scale(base.width)
    if scale > 1:
        base = base.resize((base.width * scale, base.height * scale), Image.Resampling.NEAREST)
    width, height = base.size
    # the map is smooth by nature (a coarse grid of patches), so it is interpolated; the image is not
    values = np.asarray(Image.fromarray(scaled(heatmap).astype(np.float32), "F")
                        .resize((width, height), Image.Resampling.BILINEAR))
    alpha = (OVERLAY_ALPHA * np.clip(values, 0.0, 1.0))[..., None]
    blended = np.asarray(base, dtype=np.float32) * (1.0 - alpha) + _colours(values) * alpha
    coloured = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8), "RGB")
    x, y = at if at is not None else peak(heatmap, source.width, source.height)
    _ring(coloured, (x * scale, y * scale))
    bar = colour_bar(height)
    panel = Image.new("RGB", (2 * width + bar.width + 2 * GAP, height), (255, 255, 255))
    panel.paste(base, (0, 0))
    panel.paste(coloured, (width + GAP, 0))
    panel.paste(bar, (2 * width + 2 * GAP, 0))
    return panel


def _ring(image: Image.Image, at: tuple[float, float]) -> None:
    """A white ring round the peak ``at`` (``image``'s pixels)."""
    draw = ImageDraw.Draw(image)
    radius = max(3, min(image.size) // 25)
    x, y = at
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=(255, 255, 255), width=max(1, radius // 3))
