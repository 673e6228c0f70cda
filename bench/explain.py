"""Benchmark the explanations: the pointing game per method, then images/s for ViT-S/16 at 224 px.

Run: ``.venv/bin/python bench/explain.py`` (``--patients 300 --epochs 4`` for a quicker run,
``--skip-pointing`` / ``--skip-speed`` for one half). Writes into a temporary folder only.

Pointing: the demo's path on its own data, with the lesions' boxes kept
(``make_chestxray_like(boxes=True)``: 128 px PNGs, 14 findings in their grid cells) ->
``prepare`` (official patient split, 64 px) -> ``train`` (the demo's small scratch ViT, 8 px
patches) -> every true finding of every test image explained from its PNG file. A hit is a peak
inside the finding's box widened by half a patch (8 source pixels). This is how the default
method was chosen.

Speed: a random-weight ViT-S/16 (384 wide, 12 layers, 6 heads) at 224 px, batches of
``--batch-size`` uint8 images, one label each, through :func:`vitune.explain.explain_images`
(decoding excluded: arrays in memory), on this machine's CPU threads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitune.config import EXPLAIN_METHODS, PrepareConfig, TrainConfig  # noqa: E402
from vitune.runtime.progress import quiet_library_bars  # noqa: E402

SOURCE_SIZE, MODEL_SIZE, PATCH = 128, 64, 8


def train_on_lesions(root: Path, patients: int, epochs: float, seed: int):
    """The demo's data (with boxes) and model: returns the RUN_DIR, the release folder and the boxes."""
    from vitune.data.prepare import prepare
    from vitune.data.synthetic import BOXES_FILE, make_chestxray_like
    from vitune.training.fine_tune import train
    from vitune.workflows.demo import make_scratch_vit

    source = make_chestxray_like(root / "source", n_patients=patients, seed=seed, image_size=SOURCE_SIZE, boxes=True)
    prepare(PrepareConfig(source=source, out=root / "data", image_size=MODEL_SIZE, split="official", seed=seed))
    model = make_scratch_vit(root / "base-model", MODEL_SIZE, seed)
    result = train(TrainConfig(data=str(root / "data"), model=str(model), out=str(root / "run"), epochs=epochs,
                               lr=5e-4, batch_size=32, warmup=0.1, weight_decay=0.05, seed=seed))
    return result, source, json.loads((source / BOXES_FILE).read_text())


def pointing(run_dir: Path, source: Path, boxes: dict, method: str) -> tuple[float, int, float]:
    """(share of hits, positives, seconds) of ``method`` over every true finding of the test images."""
    from vitune.explain import explain_images
    from vitune.explain.pointing import pointing_hits, pointing_score
    from vitune.models.run import load_run

    run = load_run(run_dir)
    test = [name for name in (source / "test_list.txt").read_text().split() if boxes[name]]
    hits = []
    started = time.perf_counter()
    for finding in run.labels:  # one call per label: every image that has it, that label explained
        files = [source / "images" / name for name in test if finding in boxes[name]]
        for name, result in zip([f.name for f in files], explain_images(run, files, labels=[finding], method=method)):
            peaks = {label: entry.peak for label, entry in result.labels.items()}
            hits += pointing_hits(peaks, {finding: boxes[name][finding]}, margin=PATCH / 2 * SOURCE_SIZE / MODEL_SIZE)
    return pointing_score(hits), len(hits), time.perf_counter() - started


def speed(batch_size: int, batches: int) -> dict[str, float]:
    """Images/s of each method for a random ViT-S/16 at 224 px."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from vitune.explain import explain_images
    from vitune.models.run import load_run

    with tempfile.TemporaryDirectory() as folder:
        model_dir = Path(folder) / "run" / "model"
        torch.manual_seed(0)
        config = ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                           patch_size=16, image_size=224, num_labels=14, problem_type="multi_label_classification")
        ViTForImageClassification(config).save_pretrained(model_dir)
        ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(model_dir)
        run = load_run(model_dir.parent, "cpu")
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(batch_size * batches)]
        explain_images(run, images[:batch_size], labels=["LABEL_0"], batch_size=batch_size)  # warm-up
        rates = {}
        for method in EXPLAIN_METHODS:
            started = time.perf_counter()
            explain_images(run, images, labels=["LABEL_0"], method=method, batch_size=batch_size)
            rates[method] = len(images) / (time.perf_counter() - started)
    return rates


def main() -> None:
    """Parse the flags, run both halves, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--skip-pointing", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    quiet_library_bars()
    if not args.skip_pointing:
        with tempfile.TemporaryDirectory() as folder:
            result, source, boxes = train_on_lesions(Path(folder), args.patients, args.epochs, args.seed)
            metrics = result.metrics["metrics"]
            print(f"trained: validation roc_auc_macro {metrics['roc_auc_macro']:.4f}")
            print("| method | pointing (test positives, peak in box +- half a patch) | positives | s |")
            print("|---|---:|---:|---:|")
            for method in EXPLAIN_METHODS:
                share, count, seconds = pointing(result.run_dir, source, boxes, method)
                print(f"| {method} | {share:.3f} | {count} | {seconds:.1f} |", flush=True)
    if not args.skip_speed:
        import torch

        rates = speed(args.batch_size, args.batches)
        threads = torch.get_num_threads()
        print(f"ViT-S/16 at 224 px, batch {args.batch_size}, {threads} CPU threads, one label per image:")
        for method, rate in rates.items():
            print(f"  {method}: {rate:.2f} images/s")


if __name__ == "__main__":
    main()
