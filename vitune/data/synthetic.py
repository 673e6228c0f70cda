"""Built-in data, written offline in seconds: a ChestX-ray14-like release and scikit-learn's digits.

:func:`make_chestxray_like` writes a synthetic dataset in the NIH ChestX-ray14 *release layout*
(``images/``, ``Data_Entry_2017_v2020.csv`` with the real columns, ``train_val_list.txt`` and
``test_list.txt`` split by patient), so ``vitune data prepare`` reads it exactly like the real
download. Each finding draws a bright blob in its own cell of a 4x4 grid over a noisy
chest-like background (two dark lung fields, ribs), with size, position and brightness jitter:
learnable by a tiny ViT from 64 px images, yet not trivial. About 55% of images are
"No Finding"; patients have 1-5 follow-up images (``00000001_000.png``, ``00000001_001.png``).
With ``boxes=True`` it also writes ``lesion_boxes.json``, each image's findings with their boxes
(the images themselves are the same); :func:`lesion_images` draws such images in memory, for
the explanation tests and ``bench/explain.py``. :func:`photo_like`, :func:`knee_film_like` and
:func:`blank_frame` draw images of other kinds, for the out-of-distribution flag.

:func:`make_shapes_like` writes a multi-label ``csv`` source of structured textures (stripes,
rings, checkerboards, crosses), each spanning several ViT patches on a plain low-noise background:
the kinds present are the labels, wherever they lie. A masked patch of a texture is predictable
from its visible neighbours only by knowing the textures, which is what masked-autoencoder
pre-training can learn from unlabeled images (``bench/pretrain.py --images shapes``).

:func:`make_digits_imagefolder` writes scikit-learn's bundled digits (1797 real 8x8 scans) as an
``imagefolder`` with one class sub-folder per digit.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from vitune.data.sources.chestxray14 import (
    ENTRY_FILES,
    FINDINGS,
    FINDINGS_COLUMN,
    IMAGE_COLUMN,
    NO_FINDING,
    PATIENT_COLUMN,
    TEST_LIST,
    TRAIN_LIST,
)
from vitune.errors import UserError

ENTRY_COLUMNS = [
    IMAGE_COLUMN, FINDINGS_COLUMN, "Follow-up #", PATIENT_COLUMN, "Patient Age", "Patient Gender",
    "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]",
]  # the real header: the bracketed pairs hold a comma, so they are split in two columns
NO_FINDING_SHARE = 0.55
# Chance of each finding on an image that has findings: common ones (Infiltration, Effusion)
# to rare ones (Hernia), as in the real release, but every finding frequent enough to evaluate.
FINDING_RATES = dict(
    zip(FINDINGS, (0.30, 0.12, 0.30, 0.40, 0.14, 0.15, 0.08, 0.12, 0.12, 0.08, 0.08, 0.08, 0.10, 0.06), strict=True)
)
TEST_PATIENT_SHARE = 0.2
GRID = 4
BOXES_FILE = "lesion_boxes.json"
BOX_SIGMAS = 2.0  # a lesion's box reaches this many blob sigmas from its centre (13% of its peak brightness)


def make_chestxray_like(out: Path | str, n_patients: int = 300, seed: int = 0, image_size: int = 128,
                        boxes: bool = False, faint_ages: tuple[int, int] | None = None,
                        faint_contrast: float = 0.15) -> Path:
    """Write a synthetic ChestX-ray14 release into ``out`` and return ``out``.

    Deterministic for a given ``seed``. The defaults give about 900 grayscale PNGs of
    ``image_size`` px from ``n_patients`` patients (1-5 follow-ups each), 20% of patients in
    ``test_list.txt``. ``boxes`` also writes ``out/lesion_boxes.json``: ``{file: {finding: [x0, y0,
    x1, y1]}}`` in pixels (x right, y down), each box :data:`BOX_SIGMAS` blob sigmas around its centre.
    ``faint_ages=(low, high)`` draws the findings of patients aged ``low`` to ``high`` (inclusive) at
    ``faint_contrast`` of their brightness: a subgroup whose findings are harder to see, for the
    subgroup evaluation (``vitune evaluate --by age``).
    """
    if n_patients < 2:
        raise UserError(f"n_patients {n_patients} is too small: use at least 2 (train and test patients)")
    out, images = _images_folder(out, image_size, "the findings stay visible")
    rng = np.random.default_rng(seed)
    background = _chest_background(image_size)
    test_patients = set(rng.choice(np.arange(1, n_patients + 1), size=max(1, round(TEST_PATIENT_SHARE * n_patients)),
                                   replace=False).tolist())
    rows: list[list[str]] = []
    lists: dict[str, list[str]] = {TRAIN_LIST: [], TEST_LIST: []}
    lesion_boxes: dict[str, dict[str, list[float]]] = {}
    for patient in range(1, n_patients + 1):
        age, gender = int(rng.integers(18, 90)), str(rng.choice(["M", "F"]))
        for follow_up in range(int(rng.integers(1, 6))):
            name = f"{patient:08d}_{follow_up:03d}.png"
            findings = _draw_findings(rng)
            faint = faint_ages is not None and faint_ages[0] <= age <= faint_ages[1]
            pixels, lesion_boxes[name] = _render(background, findings, rng, faint_contrast if faint else 1.0)
            Image.fromarray(pixels).save(images / name)
            rows.append([
                name, "|".join(findings) or NO_FINDING, str(follow_up), str(patient), str(age), gender,
                str(rng.choice(["PA", "AP"])), "2500", "2048", "0.143", "0.143",
            ])
            lists[TEST_LIST if patient in test_patients else TRAIN_LIST].append(name)
    with open(out / ENTRY_FILES[0], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(ENTRY_COLUMNS)
        writer.writerows(rows)
    for list_name, names in lists.items():
        (out / list_name).write_text("".join(f"{name}\n" for name in names))
    if boxes:
        (out / BOXES_FILE).write_text(json.dumps(lesion_boxes, indent=1) + "\n")
    return out


def _images_folder(out: Path | str, image_size: int, why_32_px: str) -> tuple[Path, Path]:
    """``out`` and its ``images`` folder, made, once ``image_size`` is checked to be at least 32 px."""
    if image_size < 32:
        raise UserError(f"image_size {image_size} is too small: use at least 32 px so {why_32_px}")
    out = Path(out)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    return out, images


def lesion_images(n: int, findings: list[str], image_size: int = 64, rate: float = 0.35,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[dict[str, list[float]]]]:
    """``n`` synthetic scans drawn as :func:`make_chestxray_like` draws them, with their lesion boxes.

    Each of ``findings`` (names from ChestX-ray14, each in its own grid cell) is present with
    chance ``rate``, independently. Returns grayscale uint8 ``[n, S, S]``, 0/1 labels ``[n,
    len(findings)]`` and per image ``{finding: [x0, y0, x1, y1]}``. Deterministic for ``seed``.
    """
    unknown = sorted(set(findings) - set(FINDINGS))
    if unknown:
        raise UserError(f"unknown finding(s) {', '.join(unknown)}: use names from {', '.join(FINDINGS)}")
    rng = np.random.default_rng(seed)
    background = _chest_background(image_size)
    labels = (rng.random((n, len(findings))) < rate).astype(np.float32)
    pixels, boxes = zip(*(_render(background, [f for f, on in zip(findings, row) if on], rng) for row in labels))
    return np.stack(pixels), labels, list(boxes)


def photo_like(size: int, seed: int = 0) -> np.ndarray:
    """A colour photograph, uint8 ``[3, S, S]``: blue sky over green grass, a red sun, sensor noise.

    With :func:`knee_film_like` and :func:`blank_frame`: images of other kinds than a chest film, which
    the out-of-distribution flag of a chest-film run must catch (tests, ``bench/ood.py``).
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    sky, grass, sun = np.array([90.0, 150.0, 235.0]), np.array([60.0, 150.0, 50.0]), np.array([250.0, 80.0, 40.0])
    image = np.where(y[None] < 0.5, sky[:, None, None], grass[:, None, None])
    disc = (x - 0.7) ** 2 + (y - 0.25) ** 2 < 0.01
    image[:, disc] = sun[:, None]
    return (image + rng.normal(0.0, 8.0, image.shape)).clip(0, 255).astype(np.uint8)


def knee_film_like(size: int, seed: int = 0) -> np.ndarray:
    """A grey knee radiograph, uint8 ``[3, S, S]``: femur and tibia as one bright vertical shaft broken by a
    dark joint space, over soft tissue."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    bone = (np.abs(x - 0.5) < 0.18) & (np.abs(y - 0.5) > 0.05)
    image = 40.0 + 150.0 * bone + rng.normal(0.0, 10.0, (size, size))
    return np.repeat(image.clip(0, 255).astype(np.uint8)[None], 3, axis=0)


def blank_frame(size: int) -> np.ndarray:
    """An all-black frame, uint8 ``[3, S, S]`` (an empty detector read-out)."""
    return np.zeros((3, size, size), dtype=np.uint8)


def _draw_findings(rng: np.random.Generator) -> list[str]:
    """The findings of one image, in canonical order; an empty list is "No Finding"."""
    if rng.random() < NO_FINDING_SHARE:
        return []
    chosen = [name for name, rate in FINDING_RATES.items() if rng.random() < rate]
    if not chosen:
        chosen = [str(rng.choice(FINDINGS, p=np.array(list(FINDING_RATES.values())) / sum(FINDING_RATES.values())))]
    return [name for name in FINDINGS if name in chosen]


def _chest_background(size: int) -> np.ndarray:
    """A float chest-like template: bright body, two darker lung fields, faint ribs."""
    y, x = np.mgrid[0:size, 0:size] / size
    body = 150.0 - 60.0 * ((x - 0.5) ** 2 * 2.5 + (y - 0.55) ** 2 * 1.5)
    lungs = np.zeros_like(body)
    for cx in (0.3, 0.7):
        lungs += np.exp(-(((x - cx) / 0.17) ** 2 + ((y - 0.5) / 0.3) ** 2) ** 2)
    ribs = 8.0 * np.sin(y * size * np.pi / 6.0) * (lungs > 0.2)
    return body - 70.0 * lungs + ribs


def _render(background: np.ndarray, findings: list[str], rng: np.random.Generator,
            contrast: float = 1.0) -> tuple[np.ndarray, dict[str, list[float]]]:
    """One grayscale image (the background, noise, a jittered blob per finding in its grid cell, its
    brightness times ``contrast``) and its boxes."""
    size = background.shape[0]
    cell = size / GRID
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    image = background + rng.normal(0.0, 14.0, background.shape)
    boxes = {}
    for name in findings:
        row, col = divmod(FINDINGS.index(name), GRID)
        cy, cx = (row + 0.5 + rng.uniform(-0.15, 0.15)) * cell, (col + 0.5 + rng.uniform(-0.15, 0.15)) * cell
        sigma = cell * rng.uniform(0.18, 0.28)
        image += contrast * rng.uniform(90.0, 130.0) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2.0 * sigma**2))
        boxes[name] = _box(cx, cy, BOX_SIGMAS * sigma, size)
    return np.clip(image, 0, 255).astype(np.uint8), boxes


def _box(cx: float, cy: float, reach: float, size: int) -> list[float]:
    """``[x0, y0, x1, y1]`` around a blob centre given on the pixel grid (pixel i's centre at i), in
    image coordinates where pixel i spans ``[i, i + 1)``, clipped to the image."""
    def clip(value: float) -> float:
        return round(min(max(value, 0.0), float(size)), 2)

    return [clip(cx + 0.5 - reach), clip(cy + 0.5 - reach), clip(cx + 0.5 + reach), clip(cy + 0.5 + reach)]


SHAPES = ("stripes", "rings", "checker", "cross")
SHAPE_RATE = 0.5  # chance of each kind on an image; an image drawn with none gets one
SHAPES_CSV = "labels.csv"
SHAPE_SIDE = 0.4  # a shape fills a square of this share of the image side, in its own quadrant
SHAPE_BACKGROUND = 60.0
SHAPE_CONTRAST = 140.0
SHAPE_NOISE = 3.0


def make_shapes_like(out: Path | str, n_images: int = 1000, seed: int = 0, image_size: int = 32) -> Path:
    """Write ``n_images`` grayscale PNGs of structured shapes and their label CSV into ``out``; return ``out``.

    Each image holds one to four of :data:`SHAPES`, each at most once, in distinct quadrants of the
    image (which quadrant, and a jitter of up to 1/16 of the side, drawn at random), with random
    angle, period and phase; the background is flat with little noise. ``out/labels.csv`` has the
    columns ``image`` (``images/00000.png``...) and ``labels`` (the kinds present, joined by ``|``),
    so ``vitune data prepare out`` reads it as a multi-label ``csv`` source, and ``out/images`` alone
    is a plain folder of unlabeled images for ``vitune pretrain``. Deterministic for a given ``seed``.
    """
    if n_images < 1:
        raise UserError(f"n_images {n_images} is too small: use at least 1")
    out, images = _images_folder(out, image_size, "the shapes span several patches")
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n_images):
        present = [shape for shape in SHAPES if rng.random() < SHAPE_RATE]
        if not present:
            present = [str(rng.choice(SHAPES))]
        name = f"{index:05d}.png"
        Image.fromarray(_render_shapes(present, image_size, rng)).save(images / name)
        rows.append([f"{images.name}/{name}", "|".join(present)])
    with open(out / SHAPES_CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "labels"])
        writer.writerows(rows)
    return out


def _render_shapes(present: list[str], size: int, rng: np.random.Generator) -> np.ndarray:
    """One grayscale image: a flat noisy background and each shape of ``present`` in its own quadrant."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    image = SHAPE_BACKGROUND + rng.normal(0.0, SHAPE_NOISE, (size, size))
    half_side = SHAPE_SIDE * size / 2.0
    quadrants = rng.permutation(4)
    for shape, quadrant in zip(present, quadrants):
        row, col = divmod(int(quadrant), 2)
        cy = (row + 0.5) * size / 2.0 + rng.uniform(-size / 16.0, size / 16.0)
        cx = (col + 0.5) * size / 2.0 + rng.uniform(-size / 16.0, size / 16.0)
        inside = (np.abs(y - cy) <= half_side) & (np.abs(x - cx) <= half_side)
        pattern = _shape_pattern(shape, y - cy, x - cx, half_side, rng)
        image += SHAPE_CONTRAST * (inside & pattern)
    return np.clip(image, 0, 255).astype(np.uint8)


def _shape_pattern(shape: str, dy: np.ndarray, dx: np.ndarray, half_side: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Where ``shape`` is bright, on offsets ``dy``, ``dx`` (pixels) from its centre: a boolean mask."""
    phase = rng.uniform(0.0, 2.0 * np.pi)
    if shape == "stripes":
        angle = rng.uniform(0.0, np.pi)
        across = dx * np.cos(angle) + dy * np.sin(angle)
        return np.sin(2.0 * np.pi * across / rng.uniform(3.5, 5.0) + phase) > 0
    if shape == "rings":
        radius = np.hypot(dy, dx)
        return np.sin(2.0 * np.pi * radius / rng.uniform(3.5, 5.0) + phase) > 0
    if shape == "checker":
        cell = rng.uniform(2.5, 4.0)
        offset_y, offset_x = rng.uniform(0.0, cell, size=2)
        return (np.floor((dy + offset_y) / cell) + np.floor((dx + offset_x) / cell)) % 2 == 0
    if shape == "cross":
        arm = half_side * rng.uniform(0.25, 0.4)
        return (np.abs(dy) <= arm) | (np.abs(dx) <= arm)
    raise ValueError(f"unknown shape {shape!r}: use one of {', '.join(SHAPES)}")


def make_digits_imagefolder(out: Path | str, image_size: int = 32) -> Path:
    """Write scikit-learn's bundled digits (1797 real 8x8 scans) as ``out/<digit>/<index>.png``.

    Ink is white on black, upscaled to ``image_size`` px (nearest neighbour keeps the scan's
    pixels). Deterministic; no download. Returns ``out``.
    """
    from sklearn.datasets import load_digits

    out = Path(out)
    digits = load_digits()
    scaled = np.clip(digits.images / 16.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    for index, (pixels, target) in enumerate(zip(scaled, digits.target)):
        folder = out / str(int(target))
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pixels).resize((image_size, image_size), Image.Resampling.NEAREST)
        image.save(folder / f"{index:04d}.png")
    return out
