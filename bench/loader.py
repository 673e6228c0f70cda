"""Loader throughput and bytes at 224 px per ``--augment`` mode, and ``--recipe strong`` against ``--recipe seed``.

Prepares a synthetic ChestX-ray14-like release (grayscale PNGs) at 224 px, which ``prepare`` stores with
one channel, plus a copy with three equal channels (what vitune 0.1 stored), then measures from ONE CPU
thread:

(a) loader images/s: ``build_trainer(TrainConfig(..., augment=MODE, num_workers=0)).get_train_dataloader()``,
    the best of 3 shuffled epochs of uint8 batches, for each mode and both layouts;
(b) the on-device preparation (uint8 -> augment -> normalise, :class:`vitune.training.augment.DeviceInputs`) in images/s
    on this CPU thread and, when there is one, on the GPU;
(c) bytes per batch that cross to the device (uint8 now, float32 before) and bytes per image on disk;
(d) end to end on the CPU: ``vitune train --recipe strong`` against ``--recipe seed`` with the same epochs and
    batch (the presets' other settings kept), a random-init ViT (hidden 192, 6 layers, patch 16).

    .venv/bin/python bench/loader.py --patients 300 --epochs 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_vs_hf import save_checkpoint  # noqa: E402

from vitune.config import PrepareConfig, TrainConfig  # noqa: E402
from vitune.data import prepare  # noqa: E402
from vitune.data.dataset_dir import features_for  # noqa: E402
from vitune.data.synthetic import make_chestxray_like  # noqa: E402
from vitune.runtime.progress import quiet_library_bars  # noqa: E402
from vitune.training.fine_tune import build_trainer, train  # noqa: E402

MODES = ("none", "light", "strong")
SIZE = 224


def three_channel_copy(dataset_dir: Path, out: Path) -> Path:
    """``dataset_dir`` with its one channel repeated three times: the 0.1 layout."""
    ds = datasets.load_from_disk(str(dataset_dir))
    features = features_for("multi_label", SIZE)
    expanded = {split: part.map(lambda row: {"pixel_values": np.repeat(np.asarray(row["pixel_values"]), 3, 0)},
                                features=features, keep_in_memory=True) for split, part in ds.items()}
    datasets.DatasetDict(expanded).save_to_disk(str(out))
    shutil.copy(dataset_dir / "dataset.json", out / "dataset.json")
    return out


def disk_bytes_per_image(dataset_dir: Path) -> float:
    """Arrow bytes on disk over the number of images."""
    total = sum(p.stat().st_size for p in dataset_dir.rglob("*.arrow"))
    return total / sum(len(part) for part in datasets.load_from_disk(str(dataset_dir)).values())


def loader_rate(dataset_dir: Path, checkpoint: Path, out: Path, mode: str, batch_size: int,
                epochs: int = 3) -> tuple[float, tuple]:
    """Images/s of a shuffled epoch of the Trainer's training loader (the best of ``epochs``: the CPU is
    shared), and the batch's shape."""
    trainer = build_trainer(TrainConfig(data=str(dataset_dir), model=str(checkpoint), out=str(out), augment=mode,
                                        num_workers=0, batch_size=batch_size))
    best, shape = 0.0, None
    for _ in range(epochs):
        batches = iter(trainer.get_train_dataloader())
        shape = tuple(next(batches)["pixel_values"].shape)  # the first batch pays the loader's set-up
        started, images = time.perf_counter(), 0
        for batch in batches:
            images += len(batch["pixel_values"])
            assert batch["pixel_values"].dtype == torch.uint8
        best = max(best, images / (time.perf_counter() - started))
    return best, shape


def device_rate(dataset_dir: Path, checkpoint: Path, out: Path, mode: str, batch_size: int, device: str,
                rounds: int = 5) -> float:
    """Images/s of the on-device preparation of training batches (uint8 -> augmented, normalised float)."""
    trainer = build_trainer(TrainConfig(data=str(dataset_dir), model=str(checkpoint), out=str(out), augment=mode,
                                        num_workers=0, batch_size=batch_size))
    batch = next(iter(trainer.get_train_dataloader()))
    pixels, labels = batch["pixel_values"].to(device), batch["labels"].to(device)
    trainer.device_inputs(pixels, labels, train=True)  # warm-up (kernels, kornia's set-up)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    for _ in range(rounds):
        trainer.device_inputs(pixels, labels, train=True)
    sync()
    return rounds * len(pixels) / (time.perf_counter() - started)


def end_to_end(dataset_dir: Path, checkpoint: Path, out: Path, recipe: str, args) -> dict:
    """``train`` with ``--recipe`` at the bench's epochs and batch; seconds, train images/s, validation AUC."""
    config = TrainConfig.from_dict({"data": str(dataset_dir), "model": str(checkpoint), "out": str(out),
                                    "recipe": recipe, "epochs": args.epochs, "batch_size": args.batch_size,
                                    "grad_accum": 1, "seed": 0})
    started = time.perf_counter()
    result = train(config)
    return {"seconds": time.perf_counter() - started, "samples_per_second": result.metrics["samples_per_second"],
            "auc": result.metrics["metrics"]["roc_auc_macro"]}


def print_loader_table(rows: list[tuple], batch_size: int) -> None:
    """(a)-(c) as markdown."""
    print(f"\n| layout | --augment | loader img/s (1 thread) | on-device prep img/s ({'/'.join(rows[0][5])}) | "
          f"bytes to device per batch of {batch_size} (float32 before) | bytes per image on disk |")
    print("|---|---|---:|---:|---:|---:|")
    for layout, mode, rate, shape, prep, devices, disk in rows:
        moved = int(np.prod(shape))
        before = batch_size * 3 * SIZE * SIZE * 4
        print(f"| {layout} | {mode} | {rate:,.0f} | {' / '.join(f'{p:,.0f}' for p in prep)} | "
              f"{moved:,} ({before:,}) | {disk:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300, help="synthetic patients (1-5 images each)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=2, help="end-to-end epochs per recipe (0: skip it)")
    args = parser.parse_args()
    quiet_library_bars()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    work = Path(tempfile.mkdtemp(prefix="vitune-loader-"))
    try:
        source = make_chestxray_like(work / "source", n_patients=args.patients, image_size=256)
        checkpoint = save_checkpoint(work / "checkpoint", SIZE)
        gray = work / "gray"
        prepare(PrepareConfig(source=str(source), out=gray, image_size=SIZE, split="official"))
        rgb = three_channel_copy(gray, work / "rgb")
        rows = []
        for layout, data in (("one channel (0.2)", gray), ("three channels (0.1)", rgb)):
            disk = disk_bytes_per_image(data)
            for mode in MODES:
                rate, shape = loader_rate(data, checkpoint, work / "run", mode, args.batch_size)
                prep = [device_rate(data, checkpoint, work / "run", mode, args.batch_size, d) for d in devices]
                rows.append((layout, mode, rate, shape, prep, devices, disk))
        print_loader_table(rows, args.batch_size)
        if args.epochs > 0:
            torch.set_num_threads(os.cpu_count() or 1)  # training takes every core, as vitune train does
            results = {r: end_to_end(gray, checkpoint, work / f"run-{r}", r, args) for r in ("seed", "strong")}
            print(f"\nend to end on the CPU, {args.epochs:g} epochs, batch {args.batch_size}:\n")
            print("| --recipe | seconds | train img/s | validation AUC |")
            print("|---|---:|---:|---:|")
            for recipe, r in results.items():
                print(f"| {recipe} | {r['seconds']:.1f} | {r['samples_per_second']:.1f} | {r['auc']:.4f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
