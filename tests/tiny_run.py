"""A tiny RUN_DIR in the `vitune train` layout, built directly (seconds, no Trainer) for the
evaluate/predict/export/report tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

from vitune.data.dataset_dir import DatasetInfo, load_dataset_dir
from vitune.inference import normalize, scale_target
from vitune.metrics import compute_metrics
from vitune.models import load_classifier, load_image_processor, resolve_preprocessing
from vitune.plots import plot_loss, plot_lr


def _targets(task: str, labels, label_range) -> torch.Tensor:
    if task == "multi_label":
        return torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    if task == "single_label":
        return torch.as_tensor(np.asarray(labels), dtype=torch.long)
    return torch.as_tensor(scale_target(np.asarray(labels), label_range), dtype=torch.float32)


def make_tiny_run(run_dir: Path, checkpoint: Path, dataset_dir: Path, steps: int = 15, seed: int = 0) -> Path:
    """Fit a tiny classifier for ``steps`` full-batch Adam steps on the train split and save a RUN_DIR."""
    torch.manual_seed(seed)
    ds, info = load_dataset_dir(dataset_dir)
    model = load_classifier(str(checkpoint), info.task, info.labels)
    if info.task == "regression":
        model.config.vitune_label_range = list(info.label_range)
        model.config.vitune_regression_loss = "mse"
    prep = resolve_preprocessing(str(checkpoint))
    train = ds["train"].with_format("numpy")
    pixels = normalize(torch.from_numpy(np.array(train["pixel_values"])), prep)
    targets = _targets(info.task, train["labels"], info.label_range)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(steps):
        loss = model(pixel_values=pixels, labels=targets).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    run_dir = Path(run_dir)
    model.save_pretrained(run_dir / "model")
    load_image_processor(str(checkpoint)).save_pretrained(run_dir / "model")
    _write_run_files(run_dir, model, info, dataset_dir, checkpoint, losses, prep)
    return run_dir


def _write_run_files(run_dir, model, info: DatasetInfo, dataset_dir, checkpoint, losses, prep) -> None:
    ds, _ = load_dataset_dir(dataset_dir)
    val = ds["validation"].with_format("numpy")
    with torch.no_grad():
        logits = model(pixel_values=normalize(torch.from_numpy(np.array(val["pixel_values"])), prep)).logits.numpy()
    from vitune.inference import logits_to_scores

    scores = logits_to_scores(info.task, logits, model.config)
    result = compute_metrics(info.task, val["labels"], scores, info.labels)
    steps = list(range(1, len(losses) + 1))
    lrs = [3e-3] * len(losses)
    (run_dir / "metrics.json").write_text(json.dumps({
        "task": info.task, "split": "validation", "num_samples": len(val),
        "metrics": result.metrics, "per_label": result.per_label,
        "history": [{"epoch": 1, "train_loss": losses[-1], "lr": lrs[-1], "eval_loss": None}],
        "train_seconds": 1.0, "samples_per_second": 100.0,
    }, indent=2))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"data": str(dataset_dir), "model": str(checkpoint), "out": str(run_dir), "epochs": 1, "lr": 3e-3},
        sort_keys=False))
    plot_loss(steps, losses, run_dir / "plots" / "loss.png")
    plot_lr(steps, lrs, run_dir / "plots" / "lr.png")


_BUILT: dict[str, Path] = {}


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
