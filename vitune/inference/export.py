"""``vitune export``: the run's model as ONNX, checked against torch, optionally int8-quantised.

The graph takes ``pixel_values`` (float32 ``[batch, 3, S, S]``, normalised with the processor's
mean/std, as ``transformers`` models do) and returns ``logits``, ``logits_uncalibrated`` (below) and, for
the families whose classifier module vitune knows, ``features``: the pooled feature the classifier reads,
which the out-of-distribution check measures (:mod:`vitune.models.ood`); the batch axis is dynamic. The
file's metadata carries what a deployment needs to use it without vitune: ``vitune_task``,
``vitune_labels``, ``vitune_image_size``, ``vitune_mean``/``vitune_std``, ``vitune_temperature`` and,
for multi-label runs evaluated by ``vitune evaluate``, ``vitune_thresholds``.

The run's temperature (``calibration.json``, fitted on validation by ``vitune train``) is baked into
the graph: ``logits`` are the model's logits divided by it (a ``Div`` node before the output), so any
ONNX consumer that applies a sigmoid/softmax gets the calibrated probabilities ``vitune predict``
gives, and the thresholds in the metadata (tuned on calibrated probabilities) apply to them as they
are. The model's own logits stay available as a second output, ``logits_uncalibrated`` (also
``logits * vitune_temperature``); ``--backend onnx`` runs that one and applies the run's temperature
itself, so ``--no-calibrate`` works there too. A run without a temperature (regression, or trained
before 0.3) exports both outputs equal.

Export goes through :func:`vitune.models.onnx.export_graph`, torch's TorchScript-based exporter
(``dynamo=False``): it needs only ``onnx``, while the newer ``torch.export`` path also needs
``onnxscript``. ONNX Runtime then runs the file on a batch of real validation images (random pixels when the dataset is not at hand) and the largest
absolute logit difference to torch, over the logits' scale (their largest magnitude, at least 1:
:func:`~vitune.models.onnx.scaled_difference`), must stay under ``tolerance``. Dynamic int8 quantisation
(``onnxruntime.quantization.quantize_dynamic``) is scored on the validation split before and
after, so its cost in the main metric is measured rather than assumed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vitune.config import ExportConfig
from vitune.data.dataset_dir import load_dataset_dir
from vitune.errors import UserError
from vitune.models.forward import pixel_batches
from vitune.models.onnx import (
    CHECK_IMAGES,
    LOGITS,
    ONNX,
    ONNX_INT8,
    NormalizedSession,
    export_graph,
    quantize_int8,
    require_onnx_extra,
    scaled_difference,
)
from vitune.models.ood import classifier_inputs, supports_ood
from vitune.models.run import Run, load_run
from vitune.tasks.calibration import apply_temperature

log = logging.getLogger(__name__)

VALIDATION_SPLIT = "validation"
CALIBRATED_OUTPUT = LOGITS  # "logits": the name every ONNX consumer of an image classifier looks for
UNCALIBRATED_OUTPUT = "logits_uncalibrated"


FEATURES = "features"


class _ClassifierOutputs(torch.nn.Module):
    """The classifier as a plain ``pixel_values -> (calibrated logits, logits[, features])`` function for tracing:
    the logits divided by the run's temperature, the model's own, and the input of its classifier module (what
    the out-of-distribution check measures)."""

    def __init__(self, model: torch.nn.Module, temperature: list[float] | None, with_features: bool):
        super().__init__()
        self.model = model
        self.with_features = with_features
        self.register_buffer("temperature", torch.tensor(temperature or [1.0], dtype=torch.float32))

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.with_features:
            logits = self.model(pixel_values=pixel_values).logits
            return logits / self.temperature, logits
        with classifier_inputs(self.model) as captured:
            logits = self.model(pixel_values=pixel_values).logits
        return logits / self.temperature, logits, captured[-1]


def classifier_outputs(run: Run) -> list[str]:
    """The outputs of a run's exported graph: calibrated and uncalibrated logits, and ``features`` where the
    family names its classifier."""
    outputs = [CALIBRATED_OUTPUT, UNCALIBRATED_OUTPUT]
    return [*outputs, FEATURES] if supports_ood(run.config) else outputs


def _validation_split(data: Path | str | None, run: Run):
    """The run's validation split (with targets), or None when the dataset is not available."""
    try:
        dataset_dir = run.dir.dataset_dir(data)
        ds, info = load_dataset_dir(dataset_dir)
    except UserError as exc:
        if data is not None:
            raise
        log.warning("no dataset for the export checks (%s): using random pixels", exc)
        return None
    if VALIDATION_SPLIT not in ds or info.image_size != run.prep.image_size:
        log.warning("%s has no usable validation split: the export checks use random pixels", dataset_dir)
        return None
    return ds[VALIDATION_SPLIT]


def _check_pixels(validation, image_size: int, count: int = CHECK_IMAGES) -> np.ndarray:
    """uint8 check images: the first validation images, else seeded random pixels."""
    if validation is not None and len(validation) >= 1:
        return np.asarray(validation.with_format("numpy")[: min(count, len(validation))]["pixel_values"])
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(count, 3, image_size, image_size), dtype=np.uint8)


def _add_metadata(run: Run, onnx_path: Path) -> None:
    import onnx

    model = onnx.load(str(onnx_path))
    thresholds = run.thresholds()
    values = {
        "vitune_task": run.task.name,
        "vitune_labels": json.dumps(run.labels),
        "vitune_image_size": str(run.prep.image_size),
        "vitune_mean": json.dumps(list(run.prep.mean)),
        "vitune_std": json.dumps(list(run.prep.std)),
        "vitune_input": "pixel_values: float32 [batch, 3, S, S], RGB, (x / 255 - mean) / std",
        "vitune_temperature": json.dumps(run.temperature),
        "vitune_outputs": json.dumps(classifier_outputs(run)),
    }
    if not run.task.is_classification:
        values["vitune_label_range"] = json.dumps(getattr(run.config, "vitune_label_range", None))
        values["vitune_regression_loss"] = str(getattr(run.config, "vitune_regression_loss", "mse"))
    if thresholds is not None:
        values["vitune_thresholds"] = json.dumps(thresholds.tolist())
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(onnx_path))


def _onnx_logits(session: NormalizedSession, batches, output: str = UNCALIBRATED_OUTPUT) -> np.ndarray:
    """The graph's ``output`` for each uint8 batch, concatenated."""
    return np.concatenate([session.outputs([output], batch)[0] for batch in batches])


def _main_metric(run: Run, y_true: np.ndarray, logits: np.ndarray) -> float | None:
    scores = run.logits_to_scores(logits)
    return run.task.metrics(y_true, scores, run.labels).metrics[run.task.main_metric]


def _quantization_check(run: Run, float_path: Path, quant_path: Path, validation, check: np.ndarray,
                        max_samples: int, batch_size: int) -> dict:
    """Main metric of the float and int8 ONNX models on validation, and their largest logit difference."""
    float_session = NormalizedSession(ONNX, float_path, run.prep, "")
    quant_session = NormalizedSession(ONNX_INT8, quant_path, run.prep, "")
    if validation is None:
        batches, y_true = [check], None
    else:
        subset = validation.select(range(min(max_samples, len(validation))))
        batches = list(pixel_batches(subset, batch_size))
        y_true = np.asarray(subset.with_format("numpy")["labels"])
    before = _onnx_logits(float_session, batches)
    after = _onnx_logits(quant_session, batches)
    result = {
        "path": str(quant_path),
        "size_mb": round(quant_path.stat().st_size / 2**20, 2),
        "samples": int(len(before)),
        "max_abs_diff": float(np.abs(before - after).max()),
        "metric": run.task.main_metric,
        "before": None,
        "after": None,
    }
    if y_true is not None:
        result["before"], result["after"] = _main_metric(run, y_true, before), _main_metric(run, y_true, after)
        result["split"] = VALIDATION_SPLIT
    return result


@dataclass
class ExportResult:
    """The exported file and its checks; ``quantized`` is None without ``--quantize``; ``temperature`` is the
    one baked into its ``logits`` (None: the run has none, ``logits`` are the model's own)."""

    onnx: Path
    opset: int
    size_mb: float
    seconds: float
    check_images: int
    max_abs_diff: float
    tolerance: float
    quantized: dict | None = None
    temperature: list[float] | None = None


def _verified_export(run: Run, onnx_path: Path, config: ExportConfig, check: np.ndarray) -> ExportResult:
    """Export, add the metadata and check onnxruntime against torch on ``check`` images."""
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    outputs = classifier_outputs(run)
    export_graph(_ClassifierOutputs(run.model, run.temperature, FEATURES in outputs), run.prep.image_size, onnx_path,
                 config.opset, outputs)
    _add_metadata(run, onnx_path)
    seconds = time.perf_counter() - start
    reference = run.logits([check])
    session = NormalizedSession(ONNX, onnx_path, run.prep, "")
    compared = [
        (_onnx_logits(session, [check]), reference),
        (_onnx_logits(session, [check], CALIBRATED_OUTPUT), apply_temperature(reference, run.temperature)),
    ]
    max_diff = 0.0
    scaled = 0.0
    for exported, expected in compared:
        max_diff = max(max_diff, float(np.abs(exported - expected).max()))
        scaled = max(scaled, scaled_difference(exported, expected))
    log.debug("onnxruntime vs torch on %d images: max abs logit difference %.3g (%.3g of their scale)",
              len(check), max_diff, scaled)
    if not scaled <= config.tolerance:
        raise UserError(
            f"{onnx_path}: onnxruntime differs from torch by {max_diff:.3g}, {scaled:.3g} of the logits' scale > "
            f"{config.tolerance:g}; try another --opset or loosen --tolerance"
        )
    return ExportResult(onnx_path, config.opset, round(onnx_path.stat().st_size / 2**20, 2), round(seconds, 2),
                        int(len(check)), max_diff, config.tolerance, temperature=run.temperature)


def export_onnx(config: ExportConfig) -> ExportResult:
    """Export ``RUN_DIR/model`` to ONNX and verify it with ONNX Runtime against torch.

    ``quantized`` (with ``--quantize``) is ``{"path", "size_mb", "samples", "max_abs_diff",
    "metric", "before", "after", "split"}`` measured on up to ``max_samples`` validation images.
    Raises :class:`UserError` when the ONNX output differs by more than ``tolerance``.
    """
    require_onnx_extra()
    run = load_run(config.run, device="cpu")
    validation = _validation_split(config.data, run)
    check = _check_pixels(validation, run.prep.image_size)
    onnx_path = Path(config.onnx)
    result = _verified_export(run, onnx_path, config, check)
    if config.quantize:
        quant_path = onnx_path.with_name(f"{onnx_path.stem}.int8.onnx")
        quantize_int8(onnx_path, quant_path)
        result.quantized = _quantization_check(run, onnx_path, quant_path, validation, check,
                                               config.max_samples, config.batch_size)
    return result
