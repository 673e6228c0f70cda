"""End-to-end training: `vitune data prepare` + `vitune train` vs. the stock Hugging Face recipe.

On one generated ChestX-ray14-like release (``make_chestxray_like``, multi-label) and one starting
checkpoint (a random ViT, hidden 192, 6 layers, saved locally), in one run:

(a) stock: the seeds' recipe -- an ``imagefolder`` with ``metadata.jsonl`` per split, loaded by
    ``datasets.load_dataset("imagefolder")``, ``with_transform`` running ``ViTImageProcessor`` on
    the PNGs at every access, a stacking collator, ``Trainer`` with the model's own BCE loss;
(b) vitune: ``vitune.data.prepare`` (decode once) + ``vitune.training.fine_tune.train``;
(c) the bare step: forward + backward + AdamW step of the same model on random tensors.

Both (a) and (b) use the same splits (vitune's), labels, hyper-parameters, seed, precision and
loader workers, evaluate each epoch and keep the best epoch. Prints a markdown table: end-to-end
seconds and their ratio (target >= 1.3x), validation AUC of both (target: within 0.02), and
vitune's training throughput as a share of the bare step (target >= 90 %).

    .venv/bin/python bench/train_vs_hf.py            # 600 patients, 1024 px PNGs, 5 epochs, lr 5e-4
    .venv/bin/python bench/train_vs_hf.py --patients 300 --source-size 512 --epochs 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vitune.config import (
    PrepareConfig,  # noqa: E402
    TrainConfig,  # noqa: E402
)
from vitune.data import load_dataset_dir  # noqa: E402
from vitune.data.synthetic import make_chestxray_like  # noqa: E402
from vitune.runtime.progress import quiet_library_bars  # noqa: E402
from vitune.tasks import compute_metrics  # noqa: E402
from vitune.training.fine_tune import loader_workers, resolve_precision, train  # noqa: E402
from vitune.workflows.prepare import prepare  # noqa: E402


def save_checkpoint(path: Path, image_size: int) -> Path:
    """A random ViT backbone (hidden 192, 6 layers, patch 16) with its image processor."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=192, num_hidden_layers=6, num_attention_heads=3, intermediate_size=768,
                       image_size=image_size, patch_size=16)
    ViTModel(config, add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path


def write_imagefolder(source: Path, dataset_dir: Path, out: Path) -> list[str]:
    """The stock layout: ``out/<split>/`` with image links and a ``metadata.jsonl`` of N-hot labels.

    Uses vitune's splits and labels so both recipes see exactly the same images.
    """
    ds, info = load_dataset_dir(dataset_dir)
    for split in ("train", "validation"):
        folder = out / split
        folder.mkdir(parents=True)
        rows = ds[split].select_columns(["file", "labels"]).to_list()
        with open(folder / "metadata.jsonl", "w") as handle:
            for row in rows:
                name = Path(row["file"]).name
                (folder / name).symlink_to((source / row["file"]).resolve())
                handle.write(json.dumps({"file_name": name, "labels": row["labels"]}) + "\n")
    return info.labels


def stock_recipe(source: Path, dataset_dir: Path, checkpoint: Path, work: Path, args) -> dict:
    """(a): imagefolder + with_transform(ViTImageProcessor) + Trainer, as in the seeds."""
    import datasets
    from transformers import AutoModelForImageClassification, Trainer, TrainingArguments, ViTImageProcessor, set_seed

    started = time.perf_counter()
    labels = write_imagefolder(source, dataset_dir, work / "imagefolder")
    ds = datasets.load_dataset("imagefolder", data_dir=str(work / "imagefolder"), cache_dir=str(work / "hf-cache"))
    processor = ViTImageProcessor.from_pretrained(checkpoint)

    def transform(batch):
        inputs = processor([image.convert("RGB") for image in batch["image"]], return_tensors="pt")
        inputs["labels"] = batch["labels"]
        return inputs

    def collate(rows):
        return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
                "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.float32)}

    def metrics(eval_pred):
        probs = 1 / (1 + np.exp(-eval_pred.predictions))
        return compute_metrics("multi_label", eval_pred.label_ids, probs, labels).metrics

    set_seed(args.seed)
    model = AutoModelForImageClassification.from_pretrained(
        checkpoint, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)}, problem_type="multi_label_classification")
    precision = resolve_precision("auto")
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(work / "stock-run"), num_train_epochs=args.epochs, learning_rate=args.lr,
            per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size * 2,
            warmup_steps=0.25, lr_scheduler_type="cosine", seed=args.seed, bf16=precision == "bf16",
            eval_strategy="epoch", save_strategy="epoch", save_total_limit=2, load_best_model_at_end=True,
            metric_for_best_model="roc_auc_macro", remove_unused_columns=False, report_to="none",
            dataloader_num_workers=args.workers, use_cpu=not torch.cuda.is_available(), disable_tqdm=True),
        train_dataset=ds["train"].with_transform(transform),
        eval_dataset=ds["validation"].with_transform(transform),
        data_collator=collate,
        compute_metrics=metrics,
    )
    result = trainer.train()
    final = trainer.evaluate()
    trainer.save_model(str(work / "stock-run" / "model"))
    return {"seconds": time.perf_counter() - started, "auc": final["eval_roc_auc_macro"],
            "samples_per_second": result.metrics["train_samples_per_second"]}


def vitune_recipe(source: Path, dataset_dir: Path, checkpoint: Path, work: Path, args) -> dict:
    """(b): decode once with ``prepare``, then ``train``."""
    started = time.perf_counter()
    prepare(PrepareConfig(source=source, out=dataset_dir, model=str(checkpoint), seed=args.seed))
    result = train(TrainConfig(data=str(dataset_dir), model=str(checkpoint), out=str(work / "vitune-run"),
                               epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                               num_workers=args.workers))
    return {"seconds": time.perf_counter() - started, "auc": result.metrics["metrics"]["roc_auc_macro"],
            "samples_per_second": result.metrics["samples_per_second"]}


def bare_step(checkpoint: Path, num_labels: int, image_size: int, args, steps: int = 20) -> float:
    """(c): samples/s of forward + backward + AdamW on random tensors already on the device."""
    from transformers import AutoModelForImageClassification

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForImageClassification.from_pretrained(
        checkpoint, num_labels=num_labels, problem_type="multi_label_classification").to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    pixels = torch.randn(args.batch_size, 3, image_size, image_size, device=device)
    labels = torch.randint(0, 2, (args.batch_size, num_labels), device=device).float()
    dtype = torch.bfloat16 if resolve_precision("auto") == "bf16" else torch.float32

    def step():
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * args.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=600, help="synthetic patients (1-5 images each)")
    parser.add_argument("--source-size", type=int, default=1024, help="side of the generated PNGs (NIH: 1024)")
    parser.add_argument("--image-size", type=int, default=128, help="model input size")
    parser.add_argument("--epochs", type=float, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="loader workers for both (default: vitune's)")
    args = parser.parse_args()
    quiet_library_bars()  # a log gets the table, not bar fragments
    args.workers = loader_workers(TrainConfig(data="-", model="-", out="-", num_workers=args.workers))

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    work = Path(tempfile.mkdtemp(prefix="vitune-bench-"))
    try:
        source = make_chestxray_like(work / "source", n_patients=args.patients, image_size=args.source_size)
        checkpoint = save_checkpoint(work / "checkpoint", args.image_size)
        dataset_dir = work / "dataset"
        ours = vitune_recipe(source, dataset_dir, checkpoint, work, args)
        stock = stock_recipe(source, dataset_dir, checkpoint, work, args)
        ds, info = load_dataset_dir(dataset_dir)
        bare = bare_step(checkpoint, len(info.labels), args.image_size, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"\n{len(ds['train'])} train / {len(ds['validation'])} validation images, {args.source_size}px PNGs -> "
          f"{args.image_size}px, ViT hidden 192 x 6 layers, {args.epochs:g} epochs, batch {args.batch_size}, "
          f"{args.workers} loader workers, {resolve_precision('auto')}, {device}\n")
    print("| recipe | end-to-end s | train samples/s | validation AUC |")
    print("|---|---:|---:|---:|")
    print(f"| stock (imagefolder + with_transform + Trainer) | {stock['seconds']:.1f} | "
          f"{stock['samples_per_second']:.1f} | {stock['auc']:.4f} |")
    print(f"| vitune (prepare + train) | {ours['seconds']:.1f} | {ours['samples_per_second']:.1f} | {ours['auc']:.4f} |")
    print(f"| bare forward+backward+AdamW on random tensors | - | {bare:.1f} | - |")
    print(f"\nspeed-up end to end: {stock['seconds'] / ours['seconds']:.2f}x (target >= 1.3x); "
          f"AUC difference: {abs(stock['auc'] - ours['auc']):.4f} (target <= 0.02); "
          f"vitune training throughput: {100 * ours['samples_per_second'] / bare:.0f}% of the bare step (target >= 90%)")


if __name__ == "__main__":
    main()
