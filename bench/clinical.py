"""Benchmark the clinical evaluation's options: test-time augmentation (AUC gain and cost) and imbalance losses.

Run: ``.venv/bin/python bench/clinical.py`` (400 patients, 4 epochs, the figures of the docs;
``--patients 1000 --epochs 10`` for the demo's budget, three times as long).
Writes into a temporary folder only and prints two Markdown tables.

The demo's path: a synthetic ChestX-ray14 release (``make_chestxray_like``: 14 findings, each a
blob in its own cell of a 4x4 grid, ~55 % "No Finding") -> ``prepare`` (official patient split,
64 px) -> ``train`` (the demo's small scratch ViT, 8 px patches, the demo's recipe).

- **TTA**: the ``--loss bce`` run, trained once, is evaluated on the test split with ``--tta none``,
  ``flip`` and ``crops`` (``vitune evaluate``: macro AUC with its 95 % bootstrap interval), and the
  test split is scored again, timed, for images/s (after one warm-up batch) and the cost ratio to
  ``none``.
- **Losses**: the same data, model, seed and budget (epochs, lr, batch) trained with ``--loss bce``,
  ``focal`` and ``asl`` (their default parameters), each evaluated on test without TTA.

The synthetic findings are position-coded, like a left- or right-sided finding on a chest film: a
horizontal flip moves each to its mirror cell, a place where the model never saw it in training.
How much that costs (or not) is what the ``flip`` row measures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitune.config import TTA_MODES, EvaluateConfig, PrepareConfig, TrainConfig  # noqa: E402
from vitune.inference.tta import VIEWS  # noqa: E402
from vitune.runtime.progress import quiet_library_bars  # noqa: E402
from vitune.tasks.losses import MULTI_LABEL_LOSSES  # noqa: E402

MODEL_SIZE = 64
BATCH = 64


def prepare_data(root: Path, patients: int, seed: int) -> Path:
    """The synthetic release, prepared at 64 px with the official patient split; returns the DATASET_DIR."""
    from vitune.data.synthetic import make_chestxray_like
    from vitune.workflows.prepare import prepare

    source = make_chestxray_like(root / "source", n_patients=patients, seed=seed)
    prepare(PrepareConfig(source=source, out=root / "data", image_size=MODEL_SIZE, split="official", seed=seed))
    return root / "data"


def train_with_loss(root: Path, data: Path, model: Path, loss: str, epochs: float, seed: int) -> tuple[Path, float]:
    """One run with ``--loss loss`` and the demo's recipe: (RUN_DIR, training seconds)."""
    from vitune.training.fine_tune import train

    out = root / f"run-{loss}"
    started = time.perf_counter()
    train(TrainConfig(data=str(data), model=str(model), out=str(out), epochs=epochs, lr=5e-4, batch_size=32,
                      warmup=0.1, weight_decay=0.05, seed=seed, loss=loss))
    return out, time.perf_counter() - started


def evaluated_auc(run_dir: Path, tta: str, bootstrap: int) -> tuple[float, list[float] | None]:
    """The test macro AUC under ``--tta tta`` and its 95 % bootstrap interval, from ``vitune evaluate``."""
    from vitune.evaluation.evaluate import evaluate

    result = evaluate(EvaluateConfig(run=str(run_dir), split="test", tta=tta, bootstrap=bootstrap, batch_size=BATCH))
    return result.metrics["roc_auc_macro"], result.confidence_intervals.get("roc_auc_macro")


def images_per_second(run_dir: Path, data: Path, tta: str) -> float:
    """Test images scored per second under ``--tta tta`` (calibrated probabilities averaged over the views)."""
    from vitune.data.dataset_dir import load_dataset_dir
    from vitune.evaluation.evaluate import split_scores
    from vitune.inference.tta import TestTimeAugmentation
    from vitune.models.run import load_run

    run = load_run(run_dir)
    test = load_dataset_dir(data)[0]["test"]
    augmentation = TestTimeAugmentation(tta, run.device)
    warm_up = test.select(range(min(BATCH, len(test))))
    split_scores(run, warm_up, BATCH, tta=augmentation)  # weights loaded, kernels picked before the clock starts
    started = time.perf_counter()
    split_scores(run, test, BATCH, tta=augmentation)
    return len(test) / (time.perf_counter() - started)


def interval_text(interval: list[float] | None) -> str:
    """``[lo, hi]`` to 3 decimals, or n/a."""
    return f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "n/a"


def main() -> None:
    """Parse the flags, train the three runs, print the TTA and loss tables."""
    import torch

    from vitune.workflows.demo import make_scratch_vit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=500)
    args = parser.parse_args()
    quiet_library_bars()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        data = prepare_data(root, args.patients, args.seed)
        model = make_scratch_vit(root / "base-model", MODEL_SIZE, args.seed)
        runs = {loss: train_with_loss(root, data, model, loss, args.epochs, args.seed) for loss in MULTI_LABEL_LOSSES}
        device = "GPU" if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
        print(f"{args.patients} synthetic patients, 64 px, demo ViT from scratch, {args.epochs:g} epochs; {device}")
        bce_run = runs["bce"][0]
        print("| --tta | views | test roc_auc_macro [95% CI] | images/s | cost vs none |")
        print("|---|---:|---|---:|---:|")
        baseline = None
        for tta in TTA_MODES:
            auc, interval = evaluated_auc(bce_run, tta, args.bootstrap)
            rate = images_per_second(bce_run, data, tta)
            baseline = baseline or rate
            print(f"| {tta} | {VIEWS[tta]} | {auc:.4f} {interval_text(interval)} | {rate:.0f} | "
                  f"{baseline / rate:.1f}x |", flush=True)
        print("| --loss | test roc_auc_macro [95% CI] | train s | cost vs bce |")
        print("|---|---|---:|---:|")
        for loss, (run_dir, seconds) in runs.items():
            auc, interval = evaluated_auc(run_dir, "none", args.bootstrap)
            print(f"| {loss} | {auc:.4f} {interval_text(interval)} | {seconds:.0f} | "
                  f"{seconds / runs['bce'][1]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
