"""A tiny CheXpert-style release for the tests: grayscale PNGs and a CSV with one column per finding."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

FINDINGS = ["Atelectasis", "Edema", "Effusion"]
CELLS = {1.0: "1.0", 0.0: "0.0", -1.0: "-1.0"}


def write_chexpert_like(root: Path, patients: int = 40, studies: int = 2, size: int = 32, seed: int = 0) -> Path:
    """``root/train.csv`` + ``root/train/patientNNNNN/studyK/view1_frontal.png``.

    Each finding brightens its own quadrant when positive (so a tiny ViT can learn it); its cell is
    1.0, 0.0, -1.0 (uncertain: the image is drawn positive) or blank (not mentioned). Patient ids
    are in a ``Patient`` column. Returns the CSV's path.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        for s in range(studies):
            present = rng.random(len(FINDINGS)) < 0.45
            pixels = rng.integers(0, 80, (size, size))
            cells = []
            for j, on in enumerate(present):
                r, c = divmod(j, 2)
                half = size // 2
                pixels[r * half:(r + 1) * half, c * half:(c + 1) * half] += 150 * int(on)
                draw = rng.random()
                cells.append("" if draw < 0.15 else "-1.0" if draw < 0.3 and on else CELLS[float(on)])
            name = f"train/patient{p:05d}/study{s + 1}/view1_frontal.png"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L").save(root / name)
            rows.append([name, "Female" if p % 2 else "Male", str(40 + p % 30), "Frontal", "PA" if s else "AP",
                         f"pt{p}", *cells])
    path = root / "train.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "Patient", *FINDINGS])
        writer.writerows(rows)
    return path
