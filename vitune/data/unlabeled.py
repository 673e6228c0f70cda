"""A folder of unlabeled images or DICOMs -> an unlabeled DATASET_DIR (what `vitune pretrain` reads).

The user's archive: images anywhere under the folder, no class folders, no label file. It goes the way
`vitune data prepare` goes, with the same pieces: the ``imagefolder`` reader's walk (image suffixes and
DICOM files by their magic, hidden files left out, symlinks leading outside reported), the safe
decoding into the Arrow cache over all cores (a damaged, truncated or oversized file is skipped with
its reason) and the fingerprint that makes an unchanged folder a cache hit. A seeded share of the
images is held back as the ``validation`` split; the splits have no ``labels`` column and
``dataset.json`` says ``"task": "unlabeled"``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from vitune.data.cache import CacheItem, build_cache
from vitune.data.dataset_dir import UNLABELED, DatasetInfo
from vitune.data.prepare import build_dataset_dir
from vitune.data.sources.imagefolder import walk
from vitune.errors import UserError

log = logging.getLogger(__name__)

IMAGES_FORMAT = "images"  # how dataset.json names a plain folder of images


def prepare_unlabeled(source: Path | str, out: Path | str, image_size: int, val_fraction: float = 0.05,
                      seed: int = 0, workers: int | None = None) -> DatasetInfo:
    """Decode every image under the folder ``source`` at ``image_size`` into the DATASET_DIR ``out``.

    ``val_fraction`` of the images (at least one when there are two or more) are held back as the
    ``validation`` split, drawn with ``seed``. Returns its :class:`DatasetInfo`, whose ``skipped`` lists
    the files that could not be used and why.
    """
    root = Path(source).expanduser()
    if not root.is_dir():
        raise UserError(f"--data {source} is neither a DATASET_DIR nor a folder of images: give one of them")
    settings = {"format": IMAGES_FORMAT, "image_size": image_size, "val_fraction": val_fraction, "seed": seed}
    return build_dataset_dir(
        str(root), Path(out), settings,
        lambda fingerprint, staging: _decode_into(root, staging, image_size, val_fraction, seed, workers, fingerprint),
    )


def held_back_count(images: int, val_fraction: float) -> int:
    """How many of ``images`` are held back: the fraction rounded, at least one when it is above 0, never all."""
    if val_fraction == 0 or images < 2:
        return 0
    return min(images - 1, max(1, round(images * val_fraction)))


def _decode_into(root: Path, staging: Path, image_size: int, val_fraction: float, seed: int, workers: int | None,
                 fingerprint: str) -> DatasetInfo:
    """List, split and decode the folder into ``staging/dataset`` (a whole DATASET_DIR, dataset.json last)."""
    tree = walk(root)
    if not tree.images:
        raise UserError(f"no images found in {root} ({len(tree.unsafe)} refused): give a folder of images or DICOMs")
    order = np.random.default_rng(seed).permutation(len(tree.images))
    held_back = set(order[:held_back_count(len(tree.images), val_fraction)].tolist())
    items = [
        CacheItem(file=file, label=None, group=None, split="validation" if index in held_back else "train",
                  path=str(root / file))
        for index, file in enumerate(tree.images)
    ]
    cache = build_cache(items, staging, UNLABELED, image_size, workers=workers)
    skipped = [*tree.unsafe, *cache.skipped]
    log.info("images of %s: %s; %d skipped", root, ", ".join(f"{k} {v}" for k, v in cache.splits.items()),
             len(skipped))
    info = DatasetInfo(
        task=UNLABELED,
        labels=[],
        image_size=image_size,
        format=IMAGES_FORMAT,
        source=str(root.resolve()),
        splits=cache.splits,
        skipped=[{"file": s.file, "reason": s.reason} for s in skipped],
        fingerprint=fingerprint,
        split_method="random",
        seed=seed,
    )
    info.save(staging / "dataset")
    return info
