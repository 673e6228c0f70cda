"""CPU inference speed: ``vitune predict`` on each ``--backend`` against ``transformers.pipeline``, and ``vitune serve``.

One ViT-S/16-sized classifier (hidden 384, 12 layers, 6 heads; random weights from a config, no
Hub) at 224 px, 14 labels, on ``--images`` random 512-px PNGs, all in one run:

- ``transformers.pipeline("image-classification", batch_size=32)`` over the files: the reference;
  then the pipeline at ``batch_size=8``, the images per forward pass vitune uses on the CPU
  (:data:`vitune.models.forward.CPU_FORWARD_IMAGES`), so that gain is shown apart;
- ``vitune predict`` (the library call behind the command) with ``--backend torch``, ``onnx`` and
  ``onnx-int8`` (each backend's export and a warm-up happen before the clock starts);
- the bare torch forward over already normalised tensors, 8 images per pass as vitune runs it: the
  bound for ``torch``;
- the exported ``model.onnx`` and ``model.int8.onnx`` alone in ONNX Runtime on the same tensors:
  the bounds for ``onnx`` and ``onnx-int8``.

It first prints the CPU and whether it has VNNI (``avx512_vnni`` or ``avx_vnni``): int8 matrix
products outrun fp32 ones only where the CPU multiplies int8 faster than it does fp32 FMAs, so
the ``onnx-int8`` ratio depends on the machine more than any other line.

Each line prints img/s and the ratio to the pipeline. Then ``vitune serve --backend B`` on
127.0.0.1, ``--requests`` single-image requests of one 512-px PNG at concurrency 1 and 8:
requests/s and p50/p95 latency.

    .venv/bin/python bench/inference.py --images 300 --requests 48
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from serve import measure, start_server

from vitune.models.forward import CPU_FORWARD_IMAGES
from vitune.models.onnx import FP32_FILE, INT8_FILE
from vitune.storage.layout import RunDir

BACKENDS = ("torch", "onnx", "onnx-int8")
IMAGE_SIDE = 512
MODEL_SIDE = 224
BATCH = 32
VIT_SMALL = {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536,
             "patch_size": 16}


def write_run(run: Path) -> None:
    """A RUN_DIR whose model is a randomly initialised ViT-S/16 multi-label classifier (14 labels)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    labels = [f"finding{i}" for i in range(14)]
    config = ViTConfig(image_size=MODEL_SIDE, num_labels=len(labels), problem_type="multi_label_classification",
                       id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}, **VIT_SMALL)
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(run / "model")
    ViTImageProcessor(size={"height": MODEL_SIDE, "width": MODEL_SIDE}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(run / "model")


def write_images(folder: Path, count: int) -> list[Path]:
    """``count`` random RGB PNGs of 512 x 512 (smooth noise, so they compress like photographs rather than static)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        small = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BICUBIC)
        path = folder / f"img{index:04d}.png"
        image.save(path)
        paths.append(path)
    return paths


def pipeline_rate(run: Path, paths: list[Path], batch_size: int = BATCH) -> float:
    """img/s of ``transformers.pipeline("image-classification", batch_size=...)`` over the files."""
    from transformers import pipeline

    classify = pipeline("image-classification", model=str(run / "model"), batch_size=batch_size, device="cpu")
    classify([str(p) for p in paths[:batch_size]])  # warm-up
    start = time.perf_counter()
    outputs = classify([str(p) for p in paths])
    seconds = time.perf_counter() - start
    assert len(outputs) == len(paths)
    return len(paths) / seconds


def predict_rate(run: Path, folder: Path, backend: str, count: int) -> float:
    """img/s of ``vitune predict RUN_DIR FOLDER --backend B`` (library call; export and warm-up not timed)."""
    from vitune.config import PredictConfig
    from vitune.inference.predict import predict

    warm = folder.parent / "warm"
    if not warm.exists():
        warm.mkdir()
        for path in sorted(folder.iterdir())[:BATCH]:
            shutil.copy(path, warm / path.name)
    predict(PredictConfig(run=str(run), inputs=[str(warm)], backend=backend, device="cpu", batch_size=BATCH))
    start = time.perf_counter()
    result = predict(PredictConfig(run=str(run), inputs=[str(folder)], backend=backend, device="cpu",
                                   batch_size=BATCH))
    seconds = time.perf_counter() - start
    assert len(result.files) == count
    return count / seconds


def forward_rate(forward: Callable[[np.ndarray], object], count: int, size: int = CPU_FORWARD_IMAGES) -> float:
    """img/s of ``forward`` on one normalised float batch of ``size`` images (by default the images vitune
    passes at a time on the CPU), repeated to ``count`` images (after one warm-up)."""
    batch = np.random.default_rng(0).standard_normal((size, 3, MODEL_SIDE, MODEL_SIDE)).astype(np.float32)
    forward(batch)
    start = time.perf_counter()
    done = 0
    while done < count:
        forward(batch)
        done += size
    return done / (time.perf_counter() - start)


def bare_forward_rate(run: Path, count: int, size: int = CPU_FORWARD_IMAGES) -> float:
    """img/s of the torch model alone (no decoding), ``size`` images per pass: the bound of ``--backend torch``."""
    from transformers import ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(run / "model").eval()

    @torch.inference_mode()
    def forward(batch: np.ndarray) -> torch.Tensor:
        return model(pixel_values=torch.from_numpy(batch)).logits

    return forward_rate(forward, count, size)


def onnx_alone_rate(path: Path, count: int, size: int = CPU_FORWARD_IMAGES) -> float:
    """img/s of an exported file alone in ONNX Runtime, ``size`` images per pass, with the intra-op threads
    ``--backend`` gives it: its bound."""
    import onnxruntime as ort

    from vitune.models.onnx import available_cores

    options = ort.SessionOptions()
    options.intra_op_num_threads = available_cores()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return forward_rate(lambda batch: session.run(None, {"pixel_values": batch}), count, size)


def describe_cpu() -> str:
    """The CPU's name, its family/model numbers and its int8-relevant instruction sets, from /proc/cpuinfo."""
    fields: dict[str, str] = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first processor's entry
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    flags = set(fields.get("flags", "").split())
    int8_sets = [flag for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if flag in flags]
    vnni = "VNNI" if {"avx512_vnni", "avx_vnni"} & flags else "no VNNI"
    family = f"family {fields['cpu family']} model {fields['model']}" if "cpu family" in fields else ""
    return f"{name} ({family}; {' '.join(int8_sets) or 'flags unknown'}: {vnni})"


def main() -> None:
    """Measure every line and print two tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--requests", type=int, default=48, help="requests per concurrency level of the server")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-seconds", type=float, default=60.0, help="cap on each serve level")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vitune-bench-inference-"))
    try:
        write_run(work / "run")
        paths = write_images(work / "images", args.images)
        print(f"CPU: {describe_cpu()}")
        print(f"ViT-S/16 at {MODEL_SIDE} px, {args.images} PNGs of {IMAGE_SIDE} px, batch {BATCH}, "
              f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
        print("| what | img/s | x pipeline |\n|---|---:|---:|")
        reference = pipeline_rate(work / "run", paths)
        print(f"| transformers.pipeline(batch_size=32) | {reference:.1f} | 1.00 |", flush=True)
        small_batches = pipeline_rate(work / "run", paths, CPU_FORWARD_IMAGES)
        print(f"| transformers.pipeline(batch_size={CPU_FORWARD_IMAGES}) | {small_batches:.1f} | "
              f"{small_batches / reference:.2f} |", flush=True)
        for backend in BACKENDS:
            rate = predict_rate(work / "run", work / "images", backend, args.images)
            print(f"| vitune predict --backend {backend} | {rate:.1f} | {rate / reference:.2f} |", flush=True)
        bound = bare_forward_rate(work / "run", args.images)
        print(f"| bare torch forward (bound of torch) | {bound:.1f} | {bound / reference:.2f} |", flush=True)
        export = RunDir(work / "run").export
        for backend, file in (("onnx", FP32_FILE), ("onnx-int8", INT8_FILE)):
            bound = onnx_alone_rate(export / file, args.images)
            print(f"| {file} alone in ONNX Runtime (bound of {backend}) | {bound:.1f} | {bound / reference:.2f} |",
                  flush=True)

        image = paths[0].read_bytes()
        print("\n| vitune serve | concurrency | requests/s | p50 ms | p95 ms |\n|---|---:|---:|---:|---:|")
        for backend in BACKENDS:
            process, url = start_server(work / "run", 8, ["--backend", backend])
            try:
                for concurrency in args.concurrency:
                    result = asyncio.run(measure(url, image, args.requests, concurrency, args.max_seconds))
                    ms = result["latencies"] * 1000
                    print(f"| --backend {backend} | {concurrency} | {result['done'] / result['seconds']:.1f} | "
                          f"{np.percentile(ms, 50):.0f} | {np.percentile(ms, 95):.0f} |", flush=True)
            finally:
                process.terminate()
                process.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
