"""A checkpoint as an image encoder: uint8 pixel batches in, pooled backbone embeddings out.

Pooling: ``cls`` is the final hidden state of the [CLS] token (what ViT/DeiT classifiers read);
``mean`` is the mean over patch tokens (special tokens left out). Backbones without a [CLS] token
(Swin) always use the mean. Which leading tokens a family has, and how it embeds a whole image (no
MAE masking), is the family table's (:mod:`vitune.models.families`). :class:`vitune.models.run.Run`
is the same for a fine-tuned RUN_DIR.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from vitune.config import check_pooling
from vitune.errors import UserError
from vitune.models.aliases import Preprocessing, load_model_config, resolve_model, resolve_preprocessing
from vitune.models.families import family_of
from vitune.models.forward import chunked_forward, normalize, resolve_device
from vitune.runtime.progress import progress

_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def digest(payload) -> str:
    """A short, stable hash of a JSON-able payload (cache keys, model identities)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_stats(paths: Iterable[Path]) -> list[str]:
    """``name:size:mtime`` of each file, sorted: a cheap identity of files on disk."""
    stats = []
    for path in sorted(paths):
        st = path.stat()
        stats.append(f"{path.name}:{st.st_size}:{st.st_mtime_ns}")
    return stats


class Encoder:
    """A checkpoint that turns uint8 pixel batches into pooled embeddings.

    ``source`` is a checkpoint (alias, Hub id or local directory) loaded with ``AutoModel``:
    frozen pre-trained features. :class:`vitune.models.run.Run` is the same for a fine-tuned RUN_DIR
    (its classifier's logits come out of the same forward pass). Construction is cheap (config and
    processor only); the weights load on first use, so a cache hit never loads the model.
    """

    is_run = False
    graph = None  # an ONNX graph (vitune.models.onnx.EncoderGraph) that encodes instead of torch, when attached

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
            return digest({"files": file_stats(files)})
        return digest({"hub": self.source, "commit": getattr(self.config, "_commit_hash", None),
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
            whole_images = dict(family_of(self.config).encoder_config)  # e.g. MAE without its random masking
            net = self._auto_class().from_pretrained(self.source, trust_remote_code=self.trust_remote_code,
                                                     use_safetensors=True, **whole_images)
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
        for name in family_of(self.config).special_tokens:
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

    def pooled_forward(self, pixel_values: torch.Tensor, pooling: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised ``pixel_values`` -> (pooled embeddings ``[B, D]``, a run's logits or None), as tensors."""
        captured: dict = {}
        hook = self.backbone.register_forward_hook(lambda _m, _i, out: captured.setdefault("out", out))
        try:
            output = self.net(pixel_values=pixel_values)
        finally:
            hook.remove()
        base = captured["out"]
        hidden = base.last_hidden_state if hasattr(base, "last_hidden_state") else base[0]
        return self.pool(hidden, pooling), (output.logits if self.is_run else None)

    @property
    def backend(self) -> str:
        """What computes the embeddings: ``torch``, or the ONNX graph (its kind and digest) ``graph`` names."""
        return "torch" if self.graph is None else self.graph.backend

    @torch.inference_mode()
    def encode(self, pixels: np.ndarray, pooling: str = "cls") -> tuple[np.ndarray, np.ndarray | None]:
        """One uint8 ``[B, 3, S, S]`` batch -> (embeddings ``[B, D]``, a run's logits or None).

        With an ONNX ``graph`` attached (``--backend onnx|onnx-int8``), ONNX Runtime runs it instead of torch.
        """
        if self.graph is not None:
            if pooling != self.graph.pooling:
                raise UserError(f"the encoder's ONNX graph pools {self.graph.pooling}, not {pooling}")
            return self.graph.encode(pixels)

        def forward(chunk: np.ndarray) -> list[np.ndarray | None]:
            x = normalize(torch.as_tensor(chunk, device=self.device), self.preprocessing)
            pooled, logits = self.pooled_forward(x, pooling)
            return [pooled.float().cpu().numpy(), None if logits is None else logits.float().cpu().numpy()]

        embeddings, logits = chunked_forward(forward, pixels, self.device)
        return embeddings, logits


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
