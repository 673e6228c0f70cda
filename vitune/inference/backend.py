"""``--backend torch|onnx|onnx-int8``: what turns a uint8 pixel batch into the run's logits.

Every backend is a :class:`LogitsBackend`: ``logits(uint8 [B, C, S, S]) -> float32 [B, K]``. Whatever
sits above it (sigmoid/softmax, calibration, thresholds, test-time augmentation) works on those
logits, so it applies the same way on every backend.

``torch`` is the run's PyTorch model. ``onnx`` and ``onnx-int8`` run ``RUN_DIR/export/model.onnx``
and its dynamically quantised twin ``model.int8.onnx`` in ONNX Runtime on the CPU, with as many
intra-op threads as this process may use cores. Both files come from :func:`export_onnx` (checked
against torch on export) and are made on first use; ``export/export.json`` records the SHA-256
of the weights they were made from and of each file, so a retrained model is exported again
rather than served stale.

Optimum's ``ORTModelForImageClassification`` was checked: it wraps the same InferenceSession but
exports through its own pipeline and expects float ``pixel_values`` from a processor; the file that
``vitune export`` already verifies is used here instead, with the preprocessing of
:func:`vitune.models.forward.normalize`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from vitune.config import ExportConfig
from vitune.errors import UserError
from vitune.inference.export import FEATURES, UNCALIBRATED_OUTPUT, classifier_outputs, export_onnx
from vitune.models.folds import FoldEnsemble
from vitune.models.onnx import (
    FP32_FILE,
    INT8_FILE,
    RECORD_FILE,
    TORCH,
    NormalizedSession,
    checkpoint_digest,
    file_digest,
    read_record,
    require_onnx_extra,
)
from vitune.models.ood import logits_and_features
from vitune.models.run import Run
from vitune.storage.atomic import replace_dir, staging_dir, write_atomic
from vitune.storage.layout import RunDir
from vitune.storage.lock import OutputLock

log = logging.getLogger(__name__)


class LogitsBackend(Protocol):
    """Anything that scores uint8 pixel batches: ``name`` and ``logits``."""

    name: str

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """float32 logits ``[B, K]`` of a uint8 ``[B, C, S, S]`` batch (C = 1 or 3)."""

    def logits_and_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The logits and, from the same forward pass, the feature ``[B, D]`` the classifier read."""


class TorchBackend:
    """The run's PyTorch model on its ``--device``."""

    name = TORCH

    def __init__(self, run: Run):
        self.run = run

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """float32 logits ``[B, K]`` of a uint8 batch."""
        return self.run.logits([pixels])

    def logits_and_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 logits ``[B, K]`` and classifier input ``[B, D]`` of a uint8 batch."""
        return logits_and_features(self.run, pixels)


class OnnxBackend(NormalizedSession):
    """An exported model in ONNX Runtime on the CPU; ``digest`` is the SHA-256 of the file it runs."""

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """float32 logits ``[B, K]`` of a uint8 batch: the model's own (the run's temperature is applied above
        every backend alike)."""
        return self.outputs([UNCALIBRATED_OUTPUT], pixels)[0]

    def logits_and_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 logits ``[B, K]`` and classifier input ``[B, D]`` of a uint8 batch, in one run of the graph."""
        logits, features = self.outputs([UNCALIBRATED_OUTPUT, FEATURES], pixels)
        return logits, features


class FoldsBackend:
    """A cross-validation's folds (:class:`FoldEnsemble`), each on its own backend: their logits side by side."""

    def __init__(self, name: str, backends: list[LogitsBackend]):
        self.name = name
        self.backends = backends

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """float32 logits ``[B, K, outputs]`` of a uint8 batch, one slice per fold."""
        return np.stack([backend.logits(pixels) for backend in self.backends], axis=1)


def weights_digest(run: Run) -> str:
    """SHA-256 over the model's config and safetensors weights, and its fitted temperature (baked into the
    graph's ``logits``): what an export is made from."""
    digest = checkpoint_digest(run.dir.model)
    if not run.dir.calibration.is_file():
        return digest
    return hashlib.sha256(f"{digest}:{file_digest(run.dir.calibration)}".encode()).hexdigest()


def _is_fresh(record: dict | None, export_dir: Path, source: str, outputs: list[str]) -> bool:
    if record is None or record.get("source_sha256") != source:
        return False
    if record.get("outputs") != outputs:  # exported before the graph gave the uncalibrated logits and the features
        return False
    return all((export_dir / name).is_file() for name in (FP32_FILE, INT8_FILE))


def exported_models(run: Run) -> dict:
    """``RUN_DIR/export/export.json``: the ONNX files of the run's current weights, exported now when missing or stale.

    The record is ``{"source_sha256", "outputs", "files": {"onnx": {"file", "sha256"}, "onnx-int8": {...}},
    "max_abs_diff", "quantized"}``. The export is written in a staging folder under the output
    lock and renamed into place, so a reader never sees half of it.
    """
    export_dir = run.dir.export
    source = weights_digest(run)
    record = read_record(export_dir)
    outputs = classifier_outputs(run)
    if _is_fresh(record, export_dir, source, outputs):
        return record
    require_onnx_extra()
    if not os.access(run.dir.root, os.W_OK):
        raise UserError(f"{export_dir} is missing or older than the model, and {run.dir.root} is read-only: export it "
                        f"once where the RUN_DIR is writable (vitune predict RUN_DIR IMAGE --backend onnx)")
    with OutputLock(export_dir, flag="RUN_DIR"), staging_dir(export_dir) as staging:
        log.warning("exporting %s to ONNX for --backend (once per trained model)", run.dir.root)
        result = export_onnx(ExportConfig(run=str(run.dir.root), onnx=str(staging / FP32_FILE), quantize=True))
        record = {
            "source_sha256": source,
            "outputs": outputs,
            "files": {
                "onnx": {"file": FP32_FILE, "sha256": file_digest(staging / FP32_FILE)},
                "onnx-int8": {"file": INT8_FILE, "sha256": file_digest(staging / INT8_FILE)},
            },
            "max_abs_diff": result.max_abs_diff,
            "quantized": {key: result.quantized[key] for key in ("metric", "before", "after", "max_abs_diff")},
        }
        write_atomic(staging / RECORD_FILE, json.dumps(record, indent=2) + "\n")
        replace_dir(staging, export_dir)
    return record


def backend_device(backend: str, device: str | None) -> str | None:
    """The device to open the run on: the CPU for the ONNX backends unless ``--device`` says otherwise."""
    return "cpu" if backend != TORCH and device is None else device


def open_backend(run: Run | FoldEnsemble, backend: str = TORCH) -> LogitsBackend:
    """The backend named by ``--backend`` for ``run`` (``onnx`` and ``onnx-int8`` export first when needed);
    a cross-validation's ensemble gets one per fold."""
    if isinstance(run, FoldEnsemble):
        return FoldsBackend(backend, [open_backend(fold, backend) for fold in run.folds])
    if backend == TORCH:
        return TorchBackend(run)
    if run.device.type != "cpu":
        raise UserError(f"--backend {backend} runs on the CPU: drop --device {run.device} or use --backend torch")
    record = exported_models(run)
    entry = record["files"].get(backend)
    if entry is None:
        raise UserError(f"--backend {backend!r} is not supported: use one of torch, onnx, onnx-int8")
    path = RunDir(run.dir.root).export / entry["file"]
    return OnnxBackend(backend, path, run.prep, entry["sha256"])
