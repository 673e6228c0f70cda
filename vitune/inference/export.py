"""``vitune export``: the run's model as ONNX, checked against torch, optionally int8-quantised.

The graph takes ``pixel_values`` (float32 ``[batch, 3, S, S]``, normalised with the processor's
mean/std, as ``transformers`` models do) and returns ``logits``; the batch axis is dynamic. The
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

Export uses torch's TorchScript-based exporter (``dynamo=False``): it needs only ``onnx``, while
the newer ``torch.export`` path also needs ``onnxscript``. ONNX Runtime then runs the file on a
batch of real validation images (random pixels when the dataset is not at hand) and the largest
absolute logit difference to torch must stay under ``tolerance``. Dynamic int8 quantisation
(``onnxruntime.quantization.quantize_dynamic``) is scored on the validation split before and
after, so its cost in the main metric is measured rather than assumed.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vitune.config import ExportConfig
from vitune.data.dataset_dir import load_dataset_dir
from vitune.errors import UserError
from vitune.models.forward import normalize, pixel_batches
from vitune.models.run import Run, load_run
from vitune.tasks.calibration import apply_temperature

log = logging.getLogger(__name__)

CHECK_IMAGES = 5  # an odd batch, unlike the export example's 2, proves the batch axis is dynamic
EXPORT_BATCH = 2
VALIDATION_SPLIT = "validation"
CALIBRATED_OUTPUT = "logits"  # the name every ONNX consumer of an image classifier looks for
UNCALIBRATED_OUTPUT = "logits_uncalibrated"


class _LogitsOnly(torch.nn.Module):
    """The classifier as a plain ``pixel_values -> (calibrated logits, logits)`` function for tracing."""

    def __init__(self, model: torch.nn.Module, temperature: list[float] | None):
        super().__init__()
        self.model = model
        self.register_buffer("temperature", torch.tensor(temperature or [1.0], dtype=torch.float32))

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(pixel_values=pixel_values).logits
        return logits / self.temperature, logits


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


def _export(run: Run, onnx_path: Path, opset: int) -> None:
    example = torch.zeros(EXPORT_BATCH, 3, run.prep.image_size, run.prep.image_size)
    with warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice and trace warnings about python-level shape checks
        # (ViT's image-size assertion) are expected: the traced graph is verified numerically below.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _LogitsOnly(run.model, run.temperature),
            (example,),
            str(onnx_path),
            input_names=["pixel_values"],
            output_names=[CALIBRATED_OUTPUT, UNCALIBRATED_OUTPUT],
            dynamic_axes={"pixel_values": {0: "batch"}, CALIBRATED_OUTPUT: {0: "batch"},
                          UNCALIBRATED_OUTPUT: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )


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
        "vitune_outputs": f"{CALIBRATED_OUTPUT}: the logits divided by vitune_temperature (calibrated); "
                          f"{UNCALIBRATED_OUTPUT}: the model's own logits",
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


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _onnx_logits(session, batches, run: Run, output: str = UNCALIBRATED_OUTPUT) -> np.ndarray:
    outputs = [session.run([output], {"pixel_values": normalize(torch.as_tensor(b), run.prep).numpy()})[0]
               for b in batches]
    return np.concatenate(outputs)


def _quantize(onnx_path: Path, out_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out_path.with_name(f".{out_path.name}.prep.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # the quantiser logs one INFO line per skipped tensor on the root logger
    try:
        quant_pre_process(str(onnx_path), str(prepared))
        quantize_dynamic(str(prepared), str(out_path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)


def _main_metric(run: Run, y_true: np.ndarray, logits: np.ndarray) -> float | None:
    scores = run.logits_to_scores(logits)
    return run.task.metrics(y_true, scores, run.labels).metrics[run.task.main_metric]


def _quantization_check(run: Run, float_path: Path, quant_path: Path, validation, check: np.ndarray,
                        max_samples: int, batch_size: int) -> dict:
    """Main metric of the float and int8 ONNX models on validation, and their largest logit difference."""
    float_session, quant_session = _session(float_path), _session(quant_path)
    if validation is None:
        batches, y_true = [check], None
    else:
        subset = validation.select(range(min(max_samples, len(validation))))
        batches = list(pixel_batches(subset, batch_size))
        y_true = np.asarray(subset.with_format("numpy")["labels"])
    before = _onnx_logits(float_session, batches, run)
    after = _onnx_logits(quant_session, batches, run)
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


def require_onnx_extra() -> None:
    """Fail with the install line when ``onnx`` or ``onnxruntime`` is missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"export needs {' and '.join(missing)}: pip install 'vitune[onnx]'")


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
    _export(run, onnx_path, config.opset)
    _add_metadata(run, onnx_path)
    seconds = time.perf_counter() - start
    reference = run.logits([check])
    session = _session(onnx_path)
    calibrated = apply_temperature(reference, run.temperature)
    max_diff = max(float(np.abs(_onnx_logits(session, [check], run) - reference).max()),
                   float(np.abs(_onnx_logits(session, [check], run, CALIBRATED_OUTPUT) - calibrated).max()))
    log.debug("onnxruntime vs torch on %d images: max abs logit difference %.3g", len(check), max_diff)
    if not max_diff <= config.tolerance:
        raise UserError(
            f"{onnx_path}: onnxruntime differs from torch by {max_diff:.3g} > {config.tolerance:g}; "
            "try another --opset or loosen --tolerance"
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
        _quantize(onnx_path, quant_path)
        result.quantized = _quantization_check(run, onnx_path, quant_path, validation, check,
                                               config.max_samples, config.batch_size)
    return result
