"""Data throughput: `vitune data prepare` + cached batches vs. the stock per-epoch PNG decoding.

Generates N 1024x1024 8-bit grayscale PNGs shaped like the NIH ChestX-ray14 release (a smooth
anatomy-like field plus sensor noise) as an image folder, then in one run measures:

(a) ``prepare`` images/s with all cores and with one worker, and what the integrity pass costs;
(b) training-batch images/s from the DATASET_DIR (batch 32, shuffled, uint8 batches: since 0.2 they are
    normalised on the device at the start of the step): the Trainer's own loader, ``vitune.training.fine_tune.build_trainer(config).get_train_dataloader()``;
(c) the stock recipe (the seeds' ``set_transform``: PIL open + convert RGB + ViTImageProcessor
    at 224 on every access) for each epoch, same images, same batch size;

and prints a markdown table with the (b)/(c) ratio per epoch.

    .venv/bin/python bench/data_throughput.py --n 512
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitune.config import PrepareConfig, TrainConfig
from vitune.data import load_dataset_dir, prepare
from vitune.runtime.progress import quiet_library_bars
from vitune.workflows.demo import make_scratch_vit

SIDE = 1024


def xray_like_png(args: tuple[Path, int]) -> int:
    """Write one NIH-like scan (8-bit gray, 1024x1024); returns its size in bytes."""
    path, seed = args
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(40, 200, (12, 12), dtype=np.uint8), "L")
    field = np.asarray(coarse.resize((SIDE, SIDE), Image.Resampling.BICUBIC), dtype=np.float32)
    pixels = np.clip(field + rng.normal(0, 4, (SIDE, SIDE)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels, "L").save(path)
    return path.stat().st_size


def make_source(root: Path, n: int) -> float:
    """An image folder ``root/{finding,normal}/*.png`` of ``n`` scans; returns the mean file size in KB."""
    jobs = []
    for i in range(n):
        folder = root / ("finding" if i % 2 else "normal")
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((folder / f"{i:05d}.png", i))
    with Pool(os.cpu_count()) as pool:
        sizes = pool.map(xray_like_png, jobs, chunksize=8)
    return float(np.mean(sizes)) / 1024


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _anonymous_rss_mb() -> float:
    """Resident anonymous memory (heap, arrays); memory-mapped Arrow pages are file-backed, not counted."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class PrepareTiming:
    """One fresh ``prepare``: wall seconds, images cached, CPU seconds in this process and in the
    decode pool, and how far this process's anonymous resident memory rose above where it started."""

    seconds: float
    images: int
    cpu_main: float
    cpu_workers: float
    rss_growth_mb: float

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    @property
    def cores_busy(self) -> float:
        return (self.cpu_main + self.cpu_workers) / self.seconds


def time_prepare(source: Path, out: Path, workers: int | None) -> PrepareTiming:
    """Run a fresh ``prepare`` into ``out`` and measure it (RSS sampled every 20 ms)."""
    baseline, peak, done = _anonymous_rss_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _anonymous_rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    cpu_main, cpu_workers = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    sampler.start()
    start = time.perf_counter()
    info = prepare(PrepareConfig(source=source, out=out, image_size=224, workers=workers, seed=0))
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return PrepareTiming(
        seconds, sum(info.splits.values()), _cpu(resource.RUSAGE_SELF) - cpu_main,
        _cpu(resource.RUSAGE_CHILDREN) - cpu_workers, max(0.0, peak[0] - baseline),
    )


def verify_cost(files: list[Path], rounds: int = 3) -> tuple[float, float]:
    """Single-process decode rate (images/s) of ``files`` at 224 px with and without the integrity pass
    (best of ``rounds``, alternating, so a busy machine hurts both sides alike)."""
    from vitune.data.images import decode_image

    rates: dict[bool, float] = {True: 0.0, False: 0.0}
    for _ in range(rounds):
        for verify in (True, False):
            start = time.process_time()
            for path in files:
                decode_image(path, 224, verify=verify)
            rates[verify] = max(rates[verify], len(files) / (time.process_time() - start))
    return rates[True], rates[False]


def cached_loader(dataset_dir: Path, checkpoint: Path, out: Path, batch_size: int, epoch: int):
    """What vitune's Trainer reads: ``build_trainer(config).get_train_dataloader()`` (shuffled uint8 batches,
    ``dataloader_num_workers=0`` as on CPU)."""
    from vitune.training.fine_tune import build_trainer

    config = TrainConfig(data=str(dataset_dir), model=str(checkpoint), out=str(out), batch_size=batch_size,
                         seed=epoch, num_workers=0)
    return build_trainer(config).get_train_dataloader()


class StockTransformDataset(torch.utils.data.Dataset):
    """The seeds' recipe: each access opens the PNG, converts to RGB and runs the image processor."""

    def __init__(self, files: list[Path], labels: list[int], processor):
        self.files, self.labels, self.processor = files, labels, processor

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        image = Image.open(self.files[index]).convert("RGB")
        pixels = self.processor(image, return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixels, "labels": self.labels[index]}


def stock_loader(dataset: StockTransformDataset, batch_size: int, epoch: int) -> torch.utils.data.DataLoader:
    """Trainer defaults: shuffled, per-item fetch, ``dataloader_num_workers=0``."""
    generator = torch.Generator().manual_seed(epoch)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)


def epoch_rates(loader) -> tuple[float, float]:
    """Images per wall second and per CPU second of this process for one full pass (every batch
    checked to be normalised float32). CPU time is what a busy shared machine cannot distort."""
    wall, cpu, seen = time.perf_counter(), time.process_time(), 0
    for batch in loader:
        pixels = batch["pixel_values"]
        if pixels.dtype != torch.float32 or pixels.shape[1:] != (3, 224, 224):
            raise RuntimeError(f"unexpected batch {pixels.dtype} {tuple(pixels.shape)}")
        seen += len(pixels)
    return seen / (time.perf_counter() - wall), seen / (time.process_time() - cpu)


def stock_processor():
    """ViTImageProcessor as the seeds configure it (224, mean/std 0.5), PIL backend."""
    import transformers

    processor_class = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor
    return processor_class(size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="number of 1024x1024 PNGs (default 512)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated files here")
    args = parser.parse_args()
    quiet_library_bars()  # a log gets the table, not bar fragments
    torch.set_num_threads(1)  # the stock loader's work is per image; keep both sides single-threaded
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vitune-bench-"))
    cores = os.cpu_count() or 1
    try:
        source = work / "source"
        start = time.perf_counter()
        mean_kb = make_source(source, args.n)
        print(f"generated {args.n} PNGs {SIDE}x{SIDE} gray, mean {mean_kb:.0f} KB, in {time.perf_counter() - start:.1f}s")

        one = time_prepare(source, work / "dataset-1worker", workers=1)  # also warms imports and page cache
        full = time_prepare(source, work / "dataset", workers=None)
        hit_start = time.perf_counter()
        prepare(PrepareConfig(source=source, out=work / "dataset", image_size=224, seed=0))
        hit_seconds = time.perf_counter() - hit_start
        pixels_mb = full.images * 3 * 224 * 224 / 2**20
        print(f"(a) prepare: {full.rate:.1f} img/s with {cores} workers, {one.rate:.1f} img/s with 1 "
              f"(x{full.rate / one.rate:.2f}); cores kept busy {full.cores_busy:.2f} vs {one.cores_busy:.2f}, "
              f"{full.cpu_workers / (full.cpu_main + full.cpu_workers):.0%} of the CPU time in the decode pool; "
              f"cache hit {hit_seconds:.2f}s; anonymous resident memory +{full.rss_growth_mb:.0f} MB "
              f"while caching {pixels_mb:.0f} MB of pixels")

        with_verify, without = verify_cost(sorted(source.rglob("*.png"))[:128])
        print(f"(a') integrity pass (PNG chunk CRCs): decode {with_verify:.1f} img/CPU-s with it, {without:.1f} "
              f"without: it costs {100 * (1 - with_verify / without):.1f}% of the decode throughput")

        ds, info = load_dataset_dir(work / "dataset")
        checkpoint = make_scratch_vit(work / "vit", image_size=224)  # mean = std = 0.5, like the seeds' in21k ViT
        train = ds["train"]
        stock = StockTransformDataset(
            [source / f for f in train["file"]], [int(v) for v in train["labels"]], stock_processor()
        )
        print(f"\ntraining batches of {args.batch_size} from the train split ({len(train)} images), "
              f"{cores} cores, torch threads 1\n")
        print("| epoch | cached img/s | stock img/s | ratio | cached img/CPU-s | stock img/CPU-s | CPU ratio |")
        print("|---|---|---|---|---|---|---|")
        ours = []
        for epoch in range(1, args.epochs + 1):
            ours.append(epoch_rates(cached_loader(work / "dataset", checkpoint, work / "run", args.batch_size, epoch)))
            theirs = epoch_rates(stock_loader(stock, args.batch_size, epoch))
            (wall, cpu), (stock_wall, stock_cpu) = ours[-1], theirs
            print(f"| {epoch} | {wall:,.0f} | {stock_wall:,.1f} | {wall / stock_wall:,.0f}x "
                  f"| {cpu:,.0f} | {stock_cpu:,.1f} | {cpu / stock_cpu:,.0f}x |")
            sys.stdout.flush()
        first_with_prepare = len(train) / (len(train) / ours[0][0] + full.seconds * len(train) / full.images)
        print(f"\nepoch 1 counting the one-off prepare of the train images: {first_with_prepare:,.1f} img/s")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
