"""From a raw map to what people see: the peak in source pixels and the overlay image.

The model sees the source resized (not cropped) to ``S x S``, so a map cell ``(row, col)`` of an
``h x w`` map covers the source's ``[col, col + 1) * W / w`` by ``[row, row + 1) * H / h``. Peaks
are given in the source's pixel coordinates (x to the right, y down, the top-left corner at
``(0, 0)``, pixel ``i`` spanning ``[i, i + 1)``), refined below one cell by a parabola through the
peak and its neighbours on each axis.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

OVERLAY_ALPHA = 0.55  # opacity of the heatmap where it is strongest
COLORMAP = "jet"


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


def overlay(source: Image.Image, heatmap: np.ndarray, label: str, score: float,
            at: tuple[float, float] | None = None) -> Image.Image:
    """The source at its own size under the coloured heatmap, with the label, its score and the peak."""
    from matplotlib import colormaps

    base = source.convert("RGB")
    width, height = base.size
    values = np.asarray(Image.fromarray(scaled(heatmap).astype(np.float32), "F")
                        .resize((width, height), Image.Resampling.BILINEAR))
    colours = (colormaps[COLORMAP](values)[..., :3] * 255.0).astype(np.float32)
    alpha = (OVERLAY_ALPHA * np.clip(values, 0.0, 1.0))[..., None]
    blended = np.asarray(base, dtype=np.float32) * (1.0 - alpha) + colours * alpha
    image = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8), "RGB")
    _annotate(image, f"{label} {score:.3f}", at if at is not None else peak(heatmap, width, height))
    return image


def _annotate(image: Image.Image, text: str, at: tuple[float, float]) -> None:
    """The caption in a dark box at the top left and a ring round the peak."""
    draw = ImageDraw.Draw(image)
    size = max(10, min(image.size) // 14)
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, size // 4)
    draw.rectangle((0, 0, right - left + 2 * pad, bottom - top + 2 * pad), fill=(0, 0, 0))
    draw.text((pad - left, pad - top), text, fill=(255, 255, 255), font=font)
    radius = max(3, min(image.size) // 25)
    x, y = at
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=(255, 255, 255), width=max(1, radius // 3))
