"""Images per forward pass on the CPU: img/s of a ViT-S/16 at 224 px by pass size, in torch and ONNX Runtime.

What :data:`vitune.models.forward.CPU_FORWARD_IMAGES` was chosen from. The classifier of
``bench/inference.py`` (random weights from a config), exported as ``vitune predict --backend onnx``
exports it (``model.onnx`` and its dynamic int8 twin ``model.int8.onnx``), then each of torch,
``model.onnx`` and ``model.int8.onnx`` run on normalised float batches of each ``--sizes`` value,
nothing to decode, with the threads vitune gives them. It prints img/s, and each size's ratio to 32
images per pass (the batch size of ``vitune predict``'s default and of the pipeline reference).

    .venv/bin/python bench/forward_pass_size.py --images 192
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from inference import bare_forward_rate, describe_cpu, onnx_alone_rate, write_run

from vitune.inference.backend import exported_models
from vitune.models.onnx import FP32_FILE, INT8_FILE
from vitune.models.run import load_run
from vitune.storage.layout import RunDir

REFERENCE_SIZE = 32


def main() -> None:
    """Measure each engine at each pass size and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192, help="images per measurement")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vitune-bench-pass-size-"))
    try:
        write_run(work / "run")
        exported_models(load_run(work / "run", device="cpu"))
        export = RunDir(work / "run").export
        engines = {
            "torch": lambda size: bare_forward_rate(work / "run", args.images, size),
            FP32_FILE: lambda size: onnx_alone_rate(export / FP32_FILE, args.images, size),
            INT8_FILE: lambda size: onnx_alone_rate(export / INT8_FILE, args.images, size),
        }
        sizes = sorted(set(args.sizes) | {REFERENCE_SIZE})
        print(f"CPU: {describe_cpu()}")
        print("| images per pass | " + " | ".join(engines) + " |")
        print("|---:|" + "---:|" * len(engines))
        rates: dict[str, dict[int, float]] = {}
        for name, measure in engines.items():
            rates[name] = {}
            for size in sizes:
                rates[name][size] = measure(size)
        for size in sizes:
            cells = [f"{rates[name][size]:.1f} ({rates[name][size] / rates[name][REFERENCE_SIZE]:.2f}x)"
                     for name in engines]
            print(f"| {size} | " + " | ".join(cells) + " |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
