"""Inputs unlike the training data: a Mahalanobis distance on the embedding, and its threshold.

``vitune train`` and ``vitune heads`` fit :class:`OodStatistics` on the embeddings of the training
split: their mean and a shrunk covariance (scikit-learn's :class:`~sklearn.covariance.LedoitWolf`,
whose precision matrix is stored: a plain sample covariance of a few hundred images in 384 or 768
dimensions is singular). The threshold is the 99th percentile of the validation images' distances,
so about 1 % of images like the validation split are flagged, and a photo, another body part or
a blank frame, far from every training image, is.

Which embedding: for a fine-tuned run, the feature its classifier reads (the classifier module's
input, found through the family table: the [CLS] token, the patch mean after its LayerNorm, or
DINOv2's [CLS] and patch mean side by side), so the check costs nothing at prediction time; for
heads, the embeddings the heads were fitted on. At most :data:`MAX_TRAIN_ROWS` training images are
used (a fixed-seed sample of a larger split): the mean and covariance of 20 000 images in 768
dimensions are already estimated to well under the spread between images.

The statistics live in one safetensors file (``RUN_DIR/ood.safetensors``, ``HEADS_DIR/ood.safetensors``):
``mean`` ``[D]``, ``precision`` ``[D, D]`` and the sorted ``validation_distances`` as float64
arrays, the threshold and the counts in its metadata. No pickle.

torchxrayvision's autoencoder was checked: it scores reconstruction error of one fixed X-ray
domain at 224 px, where this works for any run at its own size and costs no second model.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np
import torch

from vitune.data.dataset_dir import load_dataset_dir, require_split
from vitune.errors import UserError
from vitune.models.families import family_of
from vitune.models.forward import chunked_forward, normalize, pixel_batches
from vitune.runtime.progress import progress
from vitune.storage.atomic import write_atomic

if TYPE_CHECKING:
    from vitune.models.run import Run

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PERCENTILE = 99.0
MAX_TRAIN_ROWS = 20_000
SAMPLE_SEED = 0
MIN_TRAIN_ROWS = 2  # LedoitWolf needs two rows for a covariance


@dataclass
class OodStatistics:
    """The training embeddings' mean and shrunk precision, and the validation threshold on the distance."""

    mean: np.ndarray  # [D] float64
    precision: np.ndarray  # [D, D] float64, LedoitWolf's precision_
    validation_distances: np.ndarray  # sorted [N_val] float64
    threshold: float
    percentile: float
    train_rows: int  # rows in the training split
    train_rows_used: int  # rows the statistics were fitted on (at most MAX_TRAIN_ROWS)
    shrinkage: float
    feature: str  # what was embedded, in words

    @property
    def dim(self) -> int:
        """Embedding width D."""
        return int(self.mean.shape[0])

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distances ``[N]`` of embeddings ``[N, D]`` to the training mean."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise UserError(f"the out-of-distribution statistics are for {self.dim}-wide embeddings, "
                            f"these are {features.shape[1:]}: fit them again with this model")
        return mahalanobis(features, self.mean, self.precision)

    def flags(self, distances: np.ndarray) -> np.ndarray:
        """Whether each distance is over the threshold."""
        return np.asarray(distances) > self.threshold

    def save(self, path: Path | str) -> Path:
        """Write the statistics to a safetensors file (atomically)."""
        from safetensors.numpy import save

        arrays = {"mean": self.mean, "precision": self.precision, "validation_distances": self.validation_distances}
        metadata = {
            "version": str(FORMAT_VERSION),
            "threshold": repr(self.threshold),
            "percentile": repr(self.percentile),
            "train_rows": str(self.train_rows),
            "train_rows_used": str(self.train_rows_used),
            "shrinkage": repr(self.shrinkage),
            "feature": self.feature,
        }
        return write_atomic(path, save(arrays, metadata=metadata))

    @classmethod
    def load(cls, path: Path | str) -> OodStatistics | None:
        """The statistics saved at ``path``, or None when there are none (a run older than 0.3)."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
                arrays = {name: handle.get_tensor(name) for name in ("mean", "precision", "validation_distances")}
            return cls(
                arrays["mean"], arrays["precision"], arrays["validation_distances"],
                threshold=float(metadata["threshold"]), percentile=float(metadata["percentile"]),
                train_rows=int(metadata["train_rows"]), train_rows_used=int(metadata["train_rows_used"]),
                shrinkage=float(metadata["shrinkage"]), feature=metadata["feature"],
            )
        except (OSError, KeyError, ValueError, SafetensorError) as exc:
            raise UserError(f"{path} is damaged ({exc}): delete it (predictions then carry no "
                            "out-of-distribution flag) or fit it again") from exc

    def summary(self) -> dict:
        """What a report or a log says of the statistics (JSON-able)."""
        return {"dim": self.dim, "threshold": self.threshold, "percentile": self.percentile,
                "train_rows": self.train_rows, "train_rows_used": self.train_rows_used,
                "validation_rows": int(len(self.validation_distances)), "shrinkage": self.shrinkage,
                "feature": self.feature}


def mahalanobis(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """``sqrt((x - mean)^T P (x - mean))`` per row: sklearn's ``EmpiricalCovariance.mahalanobis`` gives it squared,
    from a fitted estimator only, where these are the stored arrays."""
    centered = np.asarray(features, dtype=np.float64) - mean
    squared = np.einsum("ij,jk,ik->i", centered, precision, centered)
    return np.sqrt(np.maximum(squared, 0.0))


def training_sample(rows: int, cap: int = MAX_TRAIN_ROWS, seed: int = SAMPLE_SEED) -> np.ndarray:
    """Sorted row indices of the training rows the statistics use: all of them, or ``cap`` drawn with ``seed``."""
    if rows <= cap:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, size=cap, replace=False))


def fit_ood(train_features: np.ndarray, validation_features: np.ndarray, feature: str,
            train_rows: int | None = None, percentile: float = PERCENTILE) -> OodStatistics | None:
    """Fit the statistics on training embeddings and set the threshold on validation ones.

    ``train_rows`` is the size of the whole training split when ``train_features`` is a sample of it.
    None (with a warning) when there are too few rows to estimate anything.
    """
    from sklearn.covariance import LedoitWolf

    if len(train_features) < MIN_TRAIN_ROWS or len(validation_features) == 0:
        log.warning("too few images for out-of-distribution statistics (%d train, %d validation): none stored",
                    len(train_features), len(validation_features))
        return None
    estimator = LedoitWolf(store_precision=True).fit(np.asarray(train_features, dtype=np.float64))
    distances = np.sort(mahalanobis(validation_features, estimator.location_, estimator.precision_))
    statistics = OodStatistics(
        mean=estimator.location_, precision=estimator.precision_, validation_distances=distances,
        threshold=float(np.percentile(distances, percentile)), percentile=percentile,
        train_rows=train_rows or len(train_features), train_rows_used=len(train_features),
        shrinkage=float(estimator.shrinkage_), feature=feature,
    )
    log.info("out-of-distribution threshold: Mahalanobis distance %.3g (%g-th percentile of %d validation images)",
             statistics.threshold, percentile, len(distances))
    return statistics


def classifier_module(model: torch.nn.Module) -> torch.nn.Module | None:
    """The module of ``model`` that turns the pooled feature into logits (the family table names it), or None."""
    name = family_of(model.config).classifier_module
    if name is None:
        return None
    for path, module in model.named_modules():  # outermost first: a PEFT wrapper before the module it wraps
        if path == name or path.endswith(f".{name}"):
            return module
    return None


@contextlib.contextmanager
def classifier_inputs(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """While open, each forward pass of ``model`` appends its classifier's input ``[B, D]`` to the yielded list."""
    module = classifier_module(model)
    if module is None:
        raise UserError(f"a {family_of(model.config).name} classifier has no classifier module vitune knows: "
                        "its out-of-distribution statistics cannot be computed")
    captured: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
    try:
        yield captured
    finally:
        handle.remove()


def supports_ood(model_config) -> bool:
    """Whether a classifier of ``model_config``'s family exposes the feature its classifier reads."""
    return family_of(model_config).classifier_module is not None


@torch.inference_mode()
def logits_and_features(run: Run, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The run's classifier over a uint8 batch: float32 logits ``[B, K]`` and, from the same forward passes
    (:func:`~vitune.models.forward.chunked_forward`), the feature its classifier read ``[B, D]``."""

    def forward(chunk: np.ndarray) -> list[np.ndarray]:
        with classifier_inputs(run.model) as captured:
            x = normalize(torch.as_tensor(chunk, device=run.device), run.prep)
            logits = run.model(pixel_values=x).logits
        return [logits.float().cpu().numpy(), captured[-1].float().cpu().numpy()]

    logits, features = chunked_forward(forward, pixels, run.device)
    return logits, features


def run_features(run: Run, batches: Iterable[np.ndarray], total: int | None = None, desc: str = "features") -> np.ndarray:
    """The classifier's input features ``[N, D]`` over uint8 pixel batches."""
    features = [logits_and_features(run, batch)[1] for batch in progress(batches, total=total, desc=desc, unit="batch")]
    return np.concatenate(features) if features else np.zeros((0, 0), dtype=np.float32)


def feature_name(model_config) -> str:
    """What the statistics of a run measure, in words."""
    family = family_of(model_config)
    return f"{family.name} classifier input ({family.classifier_family.classifier_pooling(model_config)})"


def fit_run_ood(run: Run, dataset_dir: Path | str, batch_size: int = 32) -> OodStatistics | None:
    """The statistics of a fine-tuned run: its classifier's input on (a sample of) train, threshold on validation.

    None, said once, for a family whose classifier vitune cannot read (timm).
    """
    if not supports_ood(run.config):
        log.warning("no out-of-distribution statistics: vitune cannot read a %s classifier's input",
                    family_of(run.config).name)
        return None
    ds, _ = load_dataset_dir(dataset_dir)
    train = require_split(ds, "train", dataset_dir)
    validation = require_split(ds, "validation", dataset_dir)
    rows = training_sample(len(train))
    if len(rows) < len(train):
        log.info("out-of-distribution statistics on %d of %d training images (a fixed sample)", len(rows), len(train))
    sample = train.select(rows)
    train_features = run_features(run, pixel_batches(sample, batch_size), math.ceil(len(sample) / batch_size),
                                  "features train")
    validation_features = run_features(run, pixel_batches(validation, batch_size),
                                       math.ceil(len(validation) / batch_size), "features validation")
    return fit_ood(train_features, validation_features, feature_name(run.config), train_rows=len(train))
