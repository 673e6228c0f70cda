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

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from vitune.config import check_pooling
from vitune.data.dataset_dir import load_dataset_dir, require_split
from vitune.errors import UserError
from vitune.inference import normalize, pixel_batches, resolve_device
from vitune.models import Preprocessing, load_model_config, resolve_model, resolve_preprocessing
from vitune.progress import progress

log = logging.getLogger(__name__)

CACHE_VERSION = 1
_SPECIAL_TOKENS = ("cls_token", "distillation_token", "register_tokens")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_stats(paths: Iterable[Path]) -> list[str]:
    stats = []
    for path in sorted(paths):
        st = path.stat()
        stats.append(f"{path.name}:{st.st_size}:{st.st_mtime_ns}")
    return stats


class Encoder:
    """A checkpoint that turns uint8 pixel batches into pooled embeddings.

    ``source`` is a checkpoint (alias, Hub id or local directory) loaded with ``AutoModel``:
    frozen pre-trained features. :class:`vitune.run_dir.Run` is the same for a fine-tuned RUN_DIR
    (its classifier's logits come out of the same forward pass). Construction is cheap (config and
    processor only); the weights load on first use, so a cache hit never loads the model.
    """

    is_run = False

    def __init__(self, source: str | Path, name: str | None = None, device: torch.device | str | None = None,
                 trust_remote_code: bool = False):
        self.source = resolve_model(str(source))
        self.name = name or str(source)
        self.trust_remote_code = trust_remote_code
        self.device = resolve_device(device)

    @cached_property
    def config(self):
        """The checkpoint's ``PretrainedConfig``."""
        return load_model_config(self.source, self.trust_remote_code)

    @cached_property
    def preprocessing(self) -> Preprocessing:
        """Size and normalisation from the checkpoint's own processor."""
        return resolve_preprocessing(self.source, self.trust_remote_code)

    @cached_property
    def identity(self) -> str:
        """A hash that changes whenever the weights or the config change."""
        path = Path(self.source)
        if path.is_dir():
            files = [p for p in path.iterdir() if p.name.endswith(_WEIGHT_SUFFIXES) or p.name == "config.json"]
            return _digest({"files": _file_stats(files)})
        return _digest({"hub": self.source, "commit": getattr(self.config, "_commit_hash", None),
                        "config": self.config.to_dict()})

    def _auto_class(self):
        from transformers import AutoModel

        return AutoModel

    @cached_property
    def net(self) -> torch.nn.Module:
        """The network (safetensors weights only), float32 in eval mode on ``device``."""
        from transformers.utils import logging as hf_logging

        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a per-tensor loading bar is noise for one checkpoint
        try:
            net = self._auto_class().from_pretrained(self.source, trust_remote_code=self.trust_remote_code,
                                                     use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load model {self.name!r}: {exc}".splitlines()[0]) from exc
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        return net.float().eval().to(self.device)

    @property
    def backbone(self) -> torch.nn.Module:
        """The network whose last hidden state is pooled."""
        return self.net.base_model

    @cached_property
    def num_special_tokens(self) -> int:
        """Leading non-patch tokens ([CLS], DeiT distillation, DINOv2 registers)."""
        embeddings = getattr(self.backbone, "embeddings", None)
        count = 0
        for name in _SPECIAL_TOKENS:
            token = getattr(embeddings, name, None)
            if isinstance(token, torch.Tensor):
                count += token.shape[1] if token.dim() == 3 else 1
        return count

    def pool(self, hidden: torch.Tensor, pooling: str) -> torch.Tensor:
        """``[B, T, D]`` last hidden state -> ``[B, D]``."""
        if hidden.dim() == 4:  # channels-first feature maps (conv-style backbones)
            hidden = hidden.flatten(2).transpose(1, 2)
        if pooling == "cls" and self.num_special_tokens:
            return hidden[:, 0]
        return hidden[:, self.num_special_tokens :].mean(dim=1)

    @torch.inference_mode()
    def encode(self, pixels: np.ndarray, pooling: str = "cls") -> tuple[np.ndarray, np.ndarray | None]:
        """One uint8 ``[B, 3, S, S]`` batch -> (embeddings ``[B, D]``, a run's logits or None)."""
        captured: dict = {}
        hook = self.backbone.register_forward_hook(lambda _m, _i, out: captured.setdefault("out", out))
        try:
            x = normalize(torch.as_tensor(pixels, device=self.device), self.preprocessing)
            output = self.net(pixel_values=x)
        finally:
            hook.remove()
        base = captured["out"]
        hidden = base.last_hidden_state if hasattr(base, "last_hidden_state") else base[0]
        pooled = self.pool(hidden, pooling).float().cpu().numpy()
        logits = output.logits.float().cpu().numpy() if self.is_run else None
        return pooled, logits


def embed_batches(
    encoder: Encoder, batches: Iterable[np.ndarray], pooling: str = "cls", total: int | None = None,
    desc: str = "embedding",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings (float32 ``[N, D]``) and, for a run, logits of uint8 pixel batches, with a progress bar."""
    check_pooling(pooling)
    embeddings, logits = [], []
    for batch in progress(batches, total=total, desc=desc, unit="batch"):
        pooled, batch_logits = encoder.encode(batch, pooling)
        embeddings.append(pooled)
        if batch_logits is not None:
            logits.append(batch_logits)
    if not embeddings:
        raise UserError("no images to embed")
    return np.concatenate(embeddings).astype(np.float32), (np.concatenate(logits) if logits else None)


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
    return _digest({"fingerprint": info.fingerprint, "split": split, "arrow": part._fingerprint,
                    "files": _file_stats(files), "n": len(part)})


def cache_key(encoder: Encoder, dataset_dir: Path | str, split: str, pooling: str) -> str:
    """The cache key of ``split`` embedded by ``encoder`` with ``pooling``."""
    prep = encoder.preprocessing
    return _digest({"v": CACHE_VERSION, "model": encoder.identity, "data": dataset_identity(dataset_dir, split),
                    "pooling": pooling, "prep": [prep.image_size, prep.mean, prep.std]})


def _save_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    os.replace(tmp, path)


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
    from vitune.run_dir import open_model

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
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        _save_array(paths[0], values)
        if paths[1] is not None:
            _save_array(paths[1], logits)
    seconds = time.perf_counter() - start
    log.info("embedded %s: %d images in %.1f s (%.1f images/s)", split, len(values), seconds,
             len(values) / max(seconds, 1e-9))
    return Embeddings(values, logits, False, seconds, paths[0] if paths else None)
