"""A tiny RUN_DIR in the `vitune train` layout, built directly (seconds, no Trainer) for the
evaluate/predict/export/report tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

from vitune.data.dataset_dir import DatasetInfo, load_dataset_dir
from vitune.evaluation.plots import plot_loss, plot_lr
from vitune.models.aliases import load_classifier, load_image_processor, resolve_preprocessing
from vitune.models.forward import normalize
from vitune.storage.layout import RunDir
from vitune.tasks import get_task


def make_tiny_run(run_dir: Path, checkpoint: Path, dataset_dir: Path, steps: int = 15, seed: int = 0,
                  batch_size: int | None = None, pooling: str | None = None) -> Path:
    """Fit a tiny classifier for ``steps`` Adam steps on the train split and save a RUN_DIR.

    Steps are full-batch, or on ``batch_size`` random training images each; ``pooling`` as `vitune train --pooling`.
    """
    torch.manual_seed(seed)
    ds, info = load_dataset_dir(dataset_dir)
    task = get_task(info.task)
    train = ds["train"].with_format("numpy")
    label_range = task.label_range(np.asarray(train["labels"]))
    model = load_classifier(str(checkpoint), task, info.labels, pooling=pooling)
    if label_range is not None:
        model.config.vitune_label_range = list(label_range)
        model.config.vitune_regression_loss = "mse"
    prep = resolve_preprocessing(str(checkpoint))
    pixels = normalize(torch.from_numpy(np.array(train["pixel_values"])), prep)
    targets = task.batch_labels(list(train["labels"]), label_range)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(steps):
        rows = slice(None) if batch_size is None else torch.randint(0, len(pixels), (batch_size,))
        loss = task.loss(model(pixel_values=pixels[rows]).logits, targets[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    run = RunDir(run_dir)
    model.save_pretrained(run.model)
    load_image_processor(str(checkpoint)).save_pretrained(run.model)
    _write_run_files(run, model, info, dataset_dir, checkpoint, losses, prep)
    return run.root


def _write_run_files(run: RunDir, model, info: DatasetInfo, dataset_dir, checkpoint, losses, prep) -> None:
    ds, _ = load_dataset_dir(dataset_dir)
    val = ds["validation"].with_format("numpy")
    with torch.no_grad():
        logits = model(pixel_values=normalize(torch.from_numpy(np.array(val["pixel_values"])), prep)).logits.numpy()
    task = get_task(info.task)
    result = task.metrics(val["labels"], task.scores(logits, model.config), info.labels)
    steps = list(range(1, len(losses) + 1))
    lrs = [3e-3] * len(losses)
    run.metrics.write_text(json.dumps({
        "task": info.task, "split": "validation", "num_samples": len(val),
        "metrics": result.metrics, "per_label": result.per_label,
        "history": [{"epoch": 1, "train_loss": losses[-1], "lr": lrs[-1], "eval_loss": None}],
        "train_seconds": 1.0, "samples_per_second": 100.0, "hardware": "CPU, 2 cores (x86_64)",
    }, indent=2))
    run.config.write_text(yaml.safe_dump(
        {"data": str(dataset_dir), "model": str(checkpoint), "out": str(run.root), "epochs": 1, "lr": 3e-3},
        sort_keys=False))
    plot_loss(steps, losses, run.plots / "loss.png")
    plot_lr(steps, lrs, run.plots / "lr.png")


_BUILT: dict[str, Path] = {}

CHEST_FINDINGS = ["Atelectasis", "Effusion", "Nodule"]
CHEST_SPLITS = {"train": 160, "validation": 100, "test": 80}


def chest_film_run(tmp_path_factory, checkpoint: Path) -> Path:
    """A tiny run on generated chest films (ChestX-ray14's look, 32 px) with its out-of-distribution statistics.

    Built once per session, as `vitune train` leaves it; share it read-only.
    """
    from conftest import save_dataset_dir

    from vitune.data.synthetic import lesion_images
    from vitune.models.ood import fit_run_ood
    from vitune.models.run import load_run

    if "chest" not in _BUILT:
        root = tmp_path_factory.mktemp("chest-film-run")
        splits = {}
        for seed, (split, n) in enumerate(CHEST_SPLITS.items()):
            grey, labels, _ = lesion_images(n, CHEST_FINDINGS, image_size=32, seed=seed)
            splits[split] = (np.repeat(grey[:, None], 3, axis=1), [list(map(float, row)) for row in labels])
        data = save_dataset_dir(root / "data", "multi_label", CHEST_FINDINGS, splits)
        run = make_tiny_run(root / "run", checkpoint, data, steps=10, batch_size=32)
        fit_run_ood(load_run(run, "cpu"), data).save(RunDir(run).ood)
        _BUILT["chest"] = run
    return _BUILT["chest"]


def tiny_run_copy(tmp_path_factory, checkpoint: Path, task: str, dest: Path, **dataset) -> Path:
    """A private copy of a tiny ``task`` run (built once per session; its DATASET_DIR is shared, read-only)."""
    import shutil

    from conftest import write_dataset_dir

    key = f"{task}-{sorted(dataset.items())}"
    if key not in _BUILT:
        root = tmp_path_factory.mktemp(f"tiny-run-{task}")
        data = write_dataset_dir(root / "data", task=task, **dataset)
        _BUILT[key] = make_tiny_run(root / "run", checkpoint, data)
    shutil.copytree(_BUILT[key], dest)
    return dest


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``vitune ARGS`` in-process: (exit code, stdout, stderr)."""
    from vitune.cli import main

    monkeypatch.setattr("sys.argv", ["vitune", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err
