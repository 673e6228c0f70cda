"""ONNX graphs of vitune's models: the one exporter, their ONNX Runtime sessions and the encoder's graph.

:func:`export_graph` traces any ``pixel_values -> outputs`` module (torch's TorchScript-based exporter,
``dynamo=False``: it needs only ``onnx``); :func:`quantize_int8` makes the dynamically quantised twin
(``onnxruntime.quantization.quantize_dynamic``); :class:`NormalizedSession` runs a graph on uint8
batches in ONNX Runtime on the CPU, normalising as :func:`vitune.models.forward.normalize` does.
``vitune export`` and ``--backend`` export the classifier through them (:mod:`vitune.inference`).

:func:`encoder_graph` is the heads' embedding pass on ``--backend onnx|onnx-int8``: the encoder
exported with the pooled embedding (and, for a fine-tuned run, its logits) as outputs, checked
against torch on export, into ``export-encoder-<pooling>/`` beside the run (or the heads) with an
``export.json`` recording the SHA-256 of the weights it was made from and of each file, so changed
weights are exported again rather than used stale.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from vitune.config.base import DEFAULT_OPSET
from vitune.errors import UserError
from vitune.models.aliases import Preprocessing
from vitune.models.encoder import Encoder
from vitune.models.forward import chunked_forward
from vitune.storage.atomic import replace_dir, staging_dir, write_atomic
from vitune.storage.lock import OutputLock

log = logging.getLogger(__name__)

TORCH = "torch"
ONNX = "onnx"
ONNX_INT8 = "onnx-int8"
EXPORT_BATCH = 2
CHECK_IMAGES = 5  # an odd batch, unlike the export example's 2, proves the batch axis is dynamic
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"  # the name of the quantised twin of model.onnx
RECORD_FILE = "export.json"
EMBEDDINGS = "embeddings"
LOGITS = "logits"
ENCODER_TOLERANCE = 1e-4  # the largest scaled |onnxruntime - torch| embedding difference (scaled_difference)
HASH_CHUNK = 1 << 20


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_digest(folder: Path) -> str:
    """SHA-256 over a ``save_pretrained`` folder's config and safetensors weights: what an export is made from."""
    digest = hashlib.sha256()
    for source in [folder / "config.json", *sorted(folder.glob("*.safetensors"))]:
        digest.update(source.name.encode())
        digest.update(file_digest(source).encode())
    return digest.hexdigest()


def scaled_difference(exported: np.ndarray, reference: np.ndarray) -> float:
    """The largest ``|exported - reference|`` over the reference's scale (its largest magnitude, at least 1).

    fp32 kernels that sum in another order (ONNX Runtime's against torch's, AVX-512 against AVX2) drift
    in proportion to the size of the values: logits of 6 after 12 layers differed by 1.3e-4 on an
    AVX-512 Xeon. Below a magnitude of 1 this is the plain absolute difference.
    """
    scale = max(1.0, float(np.abs(reference).max()))
    return float(np.abs(exported - reference).max()) / scale


def require_onnx_extra() -> None:
    """Fail with the install line when ``onnx`` or ``onnxruntime`` is missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"export needs {' and '.join(missing)}: pip install 'vitune[onnx]'")


def export_graph(module: torch.nn.Module, image_size: int, onnx_path: Path, opset: int, outputs: list[str]) -> None:
    """Trace ``module`` (``pixel_values [batch, 3, S, S] -> outputs``, batch axis dynamic) into ``onnx_path``.

    The one exporter: the classifier of ``vitune export`` and ``--backend`` and the heads' encoder go through it.
    """
    example = torch.zeros(EXPORT_BATCH, 3, image_size, image_size)
    with warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice and trace warnings about python-level shape checks
        # (ViT's image-size assertion) are expected: the traced graph is verified numerically by the callers.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(onnx_path),
            input_names=["pixel_values"],
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in ["pixel_values", *outputs]},
            opset_version=opset,
            dynamo=False,
        )


def quantize_int8(onnx_path: Path, out_path: Path) -> None:
    """``out_path``: ``onnx_path`` with dynamically quantised int8 weights (after ONNX Runtime's pre-processing)."""
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


class NormalizedSession:
    """A graph taking normalised ``pixel_values`` in ONNX Runtime on the CPU, fed uint8 batches.

    ``digest`` is the SHA-256 of the file it runs; intra-op threads default to the cores this process may use.
    """

    def __init__(self, name: str, path: Path, prep: Preprocessing, digest: str, threads: int | None = None):
        import onnxruntime as ort

        self.name, self.path, self.digest = name, path, digest
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_cores()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        mean = np.asarray(prep.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(prep.std, dtype=np.float32).reshape(1, 3, 1, 1)
        # (x / 255 - mean) / std as one multiply-add, the same arithmetic as forward.normalize
        self.scale = (1.0 / (255.0 * std)).astype(np.float32)
        self.shift = (-mean / std).astype(np.float32)

    def outputs(self, names: list[str], pixels: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs ``names`` for a uint8 ``[B, C, S, S]`` batch (one channel broadcasts to RGB), run
        :data:`~vitune.models.forward.CPU_FORWARD_IMAGES` images at a time."""

        def forward(chunk: np.ndarray) -> list[np.ndarray]:
            rgb = np.broadcast_to(chunk, (chunk.shape[0], 3, *chunk.shape[2:]))
            normalized = rgb.astype(np.float32) * self.scale + self.shift
            return self.session.run(names, {"pixel_values": normalized})

        return chunked_forward(forward, pixels)


class _PooledOutputs(torch.nn.Module):
    """An encoder as a plain ``pixel_values -> embeddings[, logits]`` function for tracing."""

    def __init__(self, encoder: Encoder, pooling: str):
        super().__init__()
        self.encoder, self.net, self.pooling = encoder, encoder.net, pooling

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        pooled, logits = self.encoder.pooled_forward(pixel_values, self.pooling)
        return pooled if logits is None else (pooled, logits)


class EncoderGraph:
    """An encoder's exported graph in ONNX Runtime: what :meth:`Encoder.encode` gives, for one pooling."""

    def __init__(self, session: NormalizedSession, pooling: str, with_logits: bool):
        self.session, self.pooling = session, pooling
        self.names = [EMBEDDINGS, LOGITS] if with_logits else [EMBEDDINGS]

    @property
    def backend(self) -> str:
        """``onnx`` or ``onnx-int8`` and the file's digest: what the embeddings cache keys on."""
        return f"{self.session.name}:{self.session.digest}"

    def encode(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """One uint8 batch -> (embeddings ``[B, D]``, a run's logits or None)."""
        outputs = self.session.outputs(self.names, pixels)
        return outputs[0], (outputs[1] if len(outputs) > 1 else None)


def encoder_source_digest(encoder: Encoder) -> str:
    """What an encoder export is made from: the checkpoint folder's files, else the Hub identity."""
    folder = Path(encoder.source)
    return checkpoint_digest(folder) if (folder / "config.json").is_file() else encoder.identity


def _export_encoder(encoder: Encoder, pooling: str, staging: Path, source: str, opset: int) -> dict:
    """Export, check against torch on seeded random pixels, quantise; the record of what was written."""
    outputs = [EMBEDDINGS, LOGITS] if encoder.is_run else [EMBEDDINGS]
    size = encoder.preprocessing.image_size
    export_graph(_PooledOutputs(encoder, pooling), size, staging / FP32_FILE, opset, outputs)
    check = np.random.default_rng(0).integers(0, 256, size=(CHECK_IMAGES, 3, size, size), dtype=np.uint8)
    reference, _ = encoder.encode(check, pooling)
    exported = NormalizedSession(ONNX, staging / FP32_FILE, encoder.preprocessing, "").outputs([EMBEDDINGS], check)[0]
    max_diff = float(np.abs(exported - reference).max())
    if not scaled_difference(exported, reference) <= ENCODER_TOLERANCE:
        raise UserError(f"the exported encoder of {encoder.name} differs from torch by {max_diff:.3g}, more than "
                        f"{ENCODER_TOLERANCE:g} of its embeddings' scale: use --backend torch")
    quantize_int8(staging / FP32_FILE, staging / INT8_FILE)
    return {
        "source_sha256": source,
        "pooling": pooling,
        "outputs": outputs,
        "files": {ONNX: {"file": FP32_FILE, "sha256": file_digest(staging / FP32_FILE)},
                  ONNX_INT8: {"file": INT8_FILE, "sha256": file_digest(staging / INT8_FILE)}},
        "max_abs_diff": max_diff,
    }


def read_record(folder: Path) -> dict | None:
    """An export folder's ``export.json``, or None when it is missing or unreadable."""
    try:
        return json.loads((folder / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None


def encoder_graph(encoder: Encoder, pooling: str, backend: str, export_dir: Path,
                  opset: int = DEFAULT_OPSET) -> EncoderGraph:
    """The encoder's graph for ``backend`` (``onnx`` or ``onnx-int8``) in ``export_dir``, exported now when
    missing or made from other weights (under the output lock, in a staging folder renamed into place)."""
    if backend not in (ONNX, ONNX_INT8):
        raise UserError(f"--backend {backend!r} is not supported: use one of torch, onnx, onnx-int8")
    if encoder.device.type != "cpu":
        raise UserError(f"--backend {backend} runs on the CPU: drop --device {encoder.device} or use --backend torch")
    source = encoder_source_digest(encoder)
    record = read_record(export_dir)
    fresh = record is not None and (record.get("source_sha256"), record.get("pooling")) == (source, pooling)
    if not (fresh and all((export_dir / entry["file"]).is_file() for entry in record["files"].values())):
        require_onnx_extra()
        export_dir.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(export_dir.parent, os.W_OK):
            raise UserError(f"{export_dir} is missing or older than the model, and {export_dir.parent} is read-only: "
                            "export it once where it is writable, or use --backend torch")
        with OutputLock(export_dir, flag="--backend"), staging_dir(export_dir) as staging:
            log.warning("exporting the encoder of %s to ONNX for --backend (once per model and pooling)", encoder.name)
            record = _export_encoder(encoder, pooling, staging, source, opset)
            write_atomic(staging / RECORD_FILE, json.dumps(record, indent=2) + "\n")
            replace_dir(staging, export_dir)
    entry = record["files"][backend]
    session = NormalizedSession(backend, export_dir / entry["file"], encoder.preprocessing, entry["sha256"])
    return EncoderGraph(session, pooling, LOGITS in record["outputs"])


def use_backend(encoder: Encoder, pooling: str, backend: str, export_dir: Path) -> Encoder:
    """``encoder``, embedding through its ONNX graph in ``export_dir`` for ``--backend onnx|onnx-int8``
    (exported first when missing or stale), through torch for ``--backend torch``."""
    if backend != TORCH:
        encoder.graph = encoder_graph(encoder, pooling, backend, export_dir)
    return encoder
