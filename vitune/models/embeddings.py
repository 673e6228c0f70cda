"""Backbone embeddings of a DATASET_DIR split, computed once and cached on disk.

MODEL is either a RUN_DIR made by ``vitune train`` (``RUN_DIR/model`` is a fine-tuned
``AutoModelForImageClassification``: its base model gives the embeddings and, in the same forward
pass, its own head gives the logits) or a plain checkpoint (alias, Hub id or local
``save_pretrained`` directory, loaded with ``AutoModel``: frozen pre-trained features).

Pooling: ``cls`` is the final hidden state of the [CLS] token (what ViT/DeiT classifiers read);
``mean`` is the mean over patch tokens (special tokens left out). Backbones without a [CLS] token
(Swin) always use the mean.

Cache: ``CACHE_DIR/<split>-<key>.npy`` (plus ``<split>-<key>-logits.npy`` for a run), plain ``.npy``
read with ``allow_pickle=False``. ``key`` hashes the model identity (config, weight files' names,
sizes and mtimes, or the Hub id and commit), the dataset identity (``dataset.json`` fingerprint,
the split's Arrow fingerprint and files), the preprocessing and the pooling, so a retrained model
or a re-prepared dataset never reuses stale embeddings.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitune.config import check_pooling
from vitune.data.dataset_dir import load_dataset_dir, require_split
from vitune.models.encoder import Encoder, digest, embed_batches, file_stats
from vitune.models.forward import pixel_batches
from vitune.models.run import open_model
from vitune.storage.atomic import atomic_file, remove_stale_temp_files

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class Embeddings:
    """Embeddings of one split: values, the run's logits (or None), and how they were obtained."""

    values: np.ndarray
    logits: np.ndarray | None
    cached: bool
    seconds: float
    path: Path | None

    @property
    def dim(self) -> int:
        """Embedding width D."""
        return int(self.values.shape[1])


def dataset_identity(dataset_dir: Path | str, split: str) -> str:
    """A hash of the prepared dataset's content identity for ``split``."""
    ds, info = load_dataset_dir(dataset_dir)
    part = require_split(ds, split, dataset_dir)
    files = [Path(f["filename"]) for f in part.cache_files]
    return digest({"fingerprint": info.fingerprint, "split": split, "arrow": part._fingerprint,
                    "files": file_stats(files), "n": len(part)})


def cache_key(encoder: Encoder, dataset_dir: Path | str, split: str, pooling: str) -> str:
    """The cache key of ``split`` embedded by ``encoder`` with ``pooling``."""
    prep = encoder.preprocessing
    key = {"v": CACHE_VERSION, "model": encoder.identity, "data": dataset_identity(dataset_dir, split),
           "pooling": pooling, "prep": [prep.image_size, prep.mean, prep.std]}
    if encoder.backend != "torch":  # torch's embeddings keep the keys they had before --backend
        key["backend"] = encoder.backend
    return digest(key)


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as handle:
        np.save(handle, array, allow_pickle=False)


def extract_embeddings(
    model: str | Path | Encoder,
    dataset_dir: Path | str,
    split: str,
    pooling: str = "cls",
    batch_size: int = 32,
    cache_dir: Path | str | None = None,
) -> Embeddings:
    """Pooled backbone embeddings of ``split`` (float32 ``[N, D]``), reused from ``cache_dir`` when there.

    ``model`` is a RUN_DIR, a checkpoint (alias, Hub id, directory) or an :class:`Encoder`. For a
    run the classifier's logits over the split come with them (same forward pass).
    """
    check_pooling(pooling)
    encoder = model if isinstance(model, Encoder) else open_model(model)
    start = time.perf_counter()
    paths = None
    if cache_dir is not None:
        key = cache_key(encoder, dataset_dir, split, pooling)
        base = Path(cache_dir) / f"{split}-{key}"
        paths = (base.with_suffix(".npy"), Path(f"{base}-logits.npy") if encoder.is_run else None)
        if all(p is None or p.is_file() for p in paths):
            values = np.load(paths[0], allow_pickle=False)
            logits = np.load(paths[1], allow_pickle=False) if paths[1] else None
            seconds = time.perf_counter() - start
            log.info("embeddings of %s: cached %s (%d x %d)", split, paths[0], *values.shape)
            return Embeddings(values, logits, True, seconds, paths[0])
    ds, _ = load_dataset_dir(dataset_dir)
    part = require_split(ds, split, dataset_dir)
    values, logits = embed_batches(encoder, pixel_batches(part, batch_size), pooling,
                                   total=math.ceil(len(part) / batch_size), desc=f"embedding {split}")
    if paths is not None:
        remove_stale_temp_files(paths[0].parent)  # what a killed extraction was writing
        _save_array(paths[0], values)
        if paths[1] is not None:
            _save_array(paths[1], logits)
    seconds = time.perf_counter() - start
    log.info("embedded %s: %d images in %.1f s (%.1f images/s)", split, len(values), seconds,
             len(values) / max(seconds, 1e-9))
    return Embeddings(values, logits, False, seconds, paths[0] if paths else None)
