"""Peak memory of ``vitune predict`` over a folder, as the folder grows: it must stream.

Writes N small PNGs and a tiny RUN_DIR (a 2-layer ViT at 32 px), then runs
``vitune predict RUN_DIR FOLDER --out preds.csv`` as its own process for each N and prints that
process's peak resident memory (``wait4``'s ``ru_maxrss``) and its images/s.

    .venv/bin/python bench/predict_memory.py --counts 2000 20000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 32


def write_images(folder: Path, count: int) -> None:
    """``count`` random RGB PNGs of SIDE x SIDE in ``folder`` (100 per sub-folder)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        sub = folder / f"{i // 100:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(sub / f"{i:06d}.png")


def write_run(run: Path) -> None:
    """A RUN_DIR whose model is a randomly initialised 2-layer ViT classifier with 14 labels."""
    from vitune.models.aliases import load_classifier, load_image_processor
    from vitune.storage.layout import RunDir
    from vitune.workflows.demo import make_scratch_vit

    base = make_scratch_vit(run.parent / "base", image_size=SIDE)
    labels = [f"finding{i}" for i in range(14)]
    model = load_classifier(str(base), "multi_label", labels)
    model.save_pretrained(RunDir(run).model)
    load_image_processor(str(base)).save_pretrained(RunDir(run).model)


def peak_of_predict(run: Path, folder: Path, out: Path) -> tuple[float, float, int]:
    """(peak RSS in MiB, seconds, exit code) of one ``vitune predict`` process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "vitune", "predict", str(run), str(folder), "--out", str(out), "--batch-size", "64"]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    return usage.ru_maxrss / 1024, time.perf_counter() - start, os.waitstatus_to_exitcode(status)


def main() -> None:
    """Run the measurement for every count and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[2000, 20000])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vitune-bench-"))
    try:
        write_run(work / "run")
        print("| images | peak RSS of `vitune predict`, MiB | seconds | images/s |\n|---:|---:|---:|---:|")
        for count in args.counts:
            folder = work / f"images-{count}"
            write_images(folder, count)
            peak, seconds, code = peak_of_predict(work / "run", folder, work / f"preds-{count}.csv")
            rows = sum(1 for _ in open(work / f"preds-{count}.csv")) - 1 if code == 0 else 0
            if rows != count:
                raise SystemExit(f"predict exited {code} with {rows} rows for {count} images")
            print(f"| {count:,} | {peak:.0f} | {seconds:.1f} | {count / seconds:,.0f} |", flush=True)
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
