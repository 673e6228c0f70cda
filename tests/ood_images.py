"""Generated images of other kinds than a chest film, for the out-of-distribution tests: a colour
photograph, a knee film and a blank frame (uint8 ``[3, S, S]`` each)."""

from __future__ import annotations

import numpy as np


def photo_like(size: int, seed: int = 0) -> np.ndarray:
    """A colour landscape: blue sky over green grass, a red sun, sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    sky, grass, sun = np.array([90.0, 150.0, 235.0]), np.array([60.0, 150.0, 50.0]), np.array([250.0, 80.0, 40.0])
    image = np.where(y[None] < 0.5, sky[:, None, None], grass[:, None, None])
    disc = (x - 0.7) ** 2 + (y - 0.25) ** 2 < 0.01
    image[:, disc] = sun[:, None]
    return (image + rng.normal(0.0, 8.0, image.shape)).clip(0, 255).astype(np.uint8)


def knee_film_like(size: int, seed: int = 0) -> np.ndarray:
    """A grey knee radiograph: femur and tibia as two bright vertical shafts meeting at a dark joint space."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    bone = (np.abs(x - 0.5) < 0.18) & (np.abs(y - 0.5) > 0.05)
    image = 40.0 + 150.0 * bone + rng.normal(0.0, 10.0, (size, size))
    return np.repeat(image.clip(0, 255).astype(np.uint8)[None], 3, axis=0)


def blank(size: int) -> np.ndarray:
    """An all-black frame (an empty detector read-out)."""
    return np.zeros((3, size, size), dtype=np.uint8)
