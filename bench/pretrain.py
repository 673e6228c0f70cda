"""`vitune pretrain` on scarce labels: does an MAE on the unlabeled images beat a random start?

On generated ChestX-ray14-like releases (``make_chestxray_like``: findings are bright blobs in their cells
of a 4x4 grid over a chest-like background), in one run:

1. a labeled DATASET_DIR of a few hundred images (``--labeled-patients``, official patient split plus a
   validation share), and a plain folder of thousands of unlabeled images from other patients
   (``--unlabeled-patients``);
2. ``vitune pretrain`` of a small ViT from its random start on the unlabeled folder: images/s and the
   reconstruction loss;
3. ``vitune train`` of the same small ViT twice with the same settings, from its random start and from
   the pre-trained encoder (``--model RUN_DIR``), then ``vitune evaluate --split test``: test macro AUC;
4. the FLOPs of one ViT-B/16 MAE training step per image (224 px, 75 % masked, 512x8 decoder), counted with
   ``torch.utils.flop_counter``, and what they make for ~100k images on a GPU at an assumed utilisation.

With ``--images shapes`` the images are ``make_shapes_like``'s instead: structured textures (stripes, rings,
checkerboards, crosses) spanning several patches on a plain background, labeled by the kinds present;
``--labeled-images`` go through ``vitune data prepare`` (a random split, ``--test-fraction`` for test) and
``--unlabeled-images`` others, from another seed, make the plain folder.

Prints a markdown table (the figures of docs/benchmarks.md).

    .venv/bin/python bench/pretrain.py        # docs/benchmarks.md's second run (mask 0.75, raw pixels, [CLS] head)
    .venv/bin/python bench/pretrain.py --mask-ratio 0.5 --pretrain-lr 1.5e-3 --pretrain-epochs 10 \
        --finetune-epochs 15 --pooling mean   # its first run
    .venv/bin/python bench/pretrain.py --images shapes --unlabeled-images 1000 --pretrain-epochs 12 \
        --pooling mean                    # structured images: docs/benchmarks.md's run 4
    .venv/bin/python bench/pretrain.py --unlabeled-patients 100 --pretrain-epochs 2 --finetune-epochs 2  # a quick look
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

import torch

from vitune import EvaluateConfig, PrepareConfig, PretrainConfig, TrainConfig, evaluate, prepare, pretrain, train
from vitune.data.synthetic import make_chestxray_like, make_shapes_like
from vitune.runtime.progress import quiet_library_bars

# GPU peaks (dense bf16, TFLOP/s) from the vendors' data sheets, for the cost estimate
GPU_PEAK_TFLOPS = {"A100": 312.0, "H100 SXM": 989.0}
UTILISATION = 0.35  # share of the peak a ViT-B MAE step reaches (assumed; measure with a real run)
ESTIMATE_IMAGES = 100_000
ESTIMATE_EPOCHS = (400, 800)  # MAE's short and long schedules; medical_mae ran 800


def save_small_vit(path: Path, image_size: int, hidden: int, layers: int) -> Path:
    """A random small ViT backbone (patch 8) with its image processor: both runs start from these weights."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 32),
                       intermediate_size=hidden * 4, image_size=image_size, patch_size=8)
    ViTModel(config, add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path


def mae_flops_per_image(image_size: int = 224, mask_ratio: float = 0.75) -> float:
    """FLOPs of one forward and backward pass of a ViT-B/16 MAE (512-wide, 8-deep decoder) per image."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    model = ViTMAEForPreTraining(ViTMAEConfig(image_size=image_size, mask_ratio=mask_ratio, norm_pix_loss=True))
    with FlopCounterMode(display=False) as counter:
        model(pixel_values=torch.randn(1, 3, image_size, image_size)).loss.backward()
    return float(counter.get_total_flops())


def write_images(args, work: Path) -> tuple[Path, Path]:
    """The labeled source and the plain folder of unlabeled images of ``--images``, generated under ``work``."""
    if args.images == "shapes":
        labeled = make_shapes_like(work / "labeled-release", n_images=args.labeled_images, seed=args.seed,
                                   image_size=args.image_size)
        unlabeled = make_shapes_like(work / "unlabeled-release", n_images=args.unlabeled_images, seed=args.seed + 1,
                                     image_size=args.image_size)
        return labeled, unlabeled / "images"
    labeled = make_chestxray_like(work / "labeled-release", n_patients=args.labeled_patients, seed=args.seed,
                                  image_size=args.image_size)
    unlabeled = make_chestxray_like(work / "unlabeled-release", n_patients=args.unlabeled_patients,
                                    seed=args.seed + 1, image_size=args.image_size)
    return labeled, unlabeled / "images"


def fine_tune(data: Path, model: str, out: Path, args) -> dict:
    """``vitune train`` with the bench's settings, then ``vitune evaluate --split test``: the test metrics."""
    train(TrainConfig(data=str(data), model=model, out=str(out), epochs=args.finetune_epochs, lr=args.finetune_lr,
                      batch_size=args.batch_size, pooling=args.pooling, seed=args.seed, weight_decay=0.05,
                      warmup=0.1, augment="light"))
    return evaluate(EvaluateConfig(run=str(out), split="test", bootstrap=200, seed=args.seed)).metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", choices=("chestxray", "shapes"), default="chestxray",
                        help="chestxray: make_chestxray_like's blobs; shapes: make_shapes_like's textures")
    parser.add_argument("--labeled-images", type=int, default=400, help="--images shapes: images of the labeled set")
    parser.add_argument("--unlabeled-images", type=int, default=3000, help="--images shapes: unlabeled images")
    parser.add_argument("--test-fraction", type=float, default=0.3,
                        help="--images shapes: the labeled images held out for test (chestxray: the official split)")
    parser.add_argument("--labeled-patients", type=int, default=100, help="patients of the labeled set (~3 images each)")
    parser.add_argument("--unlabeled-patients", type=int, default=300, help="patients of the unlabeled folder")
    parser.add_argument("--image-size", type=int, default=32, help="32: one 8 px patch per cell of the findings' grid")
    parser.add_argument("--hidden", type=int, default=64, help="the small ViT's width")
    parser.add_argument("--layers", type=int, default=4, help="the small ViT's depth")
    parser.add_argument("--pretrain-epochs", type=float, default=15)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--norm-pix-loss", action=argparse.BooleanOptionalAction, default=False,
                        help="normalised-pixel target (the recipe's; barely moves in a CPU-sized run)")
    parser.add_argument("--pretrain-lr", type=float, default=3e-3)
    parser.add_argument("--decoder-width", type=int, default=64)
    parser.add_argument("--decoder-depth", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=float, default=8)
    parser.add_argument("--finetune-lr", type=float, default=5e-4)
    parser.add_argument("--pooling", default="cls", help="the head both fine-tunings use (cls or mean)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the data and runs in this folder")
    args = parser.parse_args()
    quiet_library_bars()

    work = args.keep or Path(tempfile.mkdtemp(prefix="vitune-pretrain-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        labeled, unlabeled = write_images(args, work)
        data = work / "labeled"
        info = prepare(PrepareConfig(source=str(labeled), out=data, image_size=args.image_size, seed=args.seed,
                                     test_fraction=args.test_fraction))
        checkpoint = save_small_vit(work / "small-vit", args.image_size, args.hidden, args.layers)

        started = time.perf_counter()
        pretrained = pretrain(PretrainConfig(
            data=str(unlabeled), model=str(checkpoint), out=str(work / "pretrain"), epochs=args.pretrain_epochs,
            batch_size=args.batch_size, lr=args.pretrain_lr, mask_ratio=args.mask_ratio, norm_pix_loss=args.norm_pix_loss,
            decoder_width=args.decoder_width, decoder_depth=args.decoder_depth, seed=args.seed)).metrics
        pretrain_seconds = time.perf_counter() - started
        scratch = fine_tune(data, str(checkpoint), work / "from-random", args)
        from_mae = fine_tune(data, str(work / "pretrain"), work / "from-pretrain", args)
        flops = mae_flops_per_image()
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    history = pretrained["history"]
    images = pretrained["pretraining"]["train_images"]
    print(f"\n{args.images}, labeled: {json.dumps(info.splits)} images, {len(info.labels)} labels; unlabeled: {images} images pre-trained "
          f"(+{pretrained['pretraining']['held_back_images']} held back); {args.image_size} px, ViT {args.hidden} "
          f"wide x {args.layers} deep, patch 8; torch threads {torch.get_num_threads()}\n")
    print("| start | pre-training | test roc_auc_macro | test average_precision_macro |")
    print("|---|---|---|---|")
    target = "normalised" if args.norm_pix_loss else "raw"
    budget = (f"{args.pretrain_epochs:g} epochs x {images} images, mask {args.mask_ratio:g}, {target} pixels: "
              f"{pretrain_seconds / 60:.1f} min, {pretrained['samples_per_second']:.0f} img/s")
    for name, metrics, spent in (("random", scratch, "none"), ("vitune pretrain", from_mae, budget)):
        print(f"| {name} | {spent} | {metrics['roc_auc_macro']:.4f} | {metrics['average_precision_macro']:.4f} |")
    print(f"\nreconstruction loss ({target} pixels): train {history[0]['train_loss']:.4f} -> "
          f"{history[-1]['train_loss']:.4f}, held back {history[0].get('eval_loss', float('nan')):.4f} -> "
          f"{pretrained['metrics']['reconstruction_loss']:.4f}")
    print(f"\nViT-B/16 MAE step (224 px, 75 % masked, decoder 512x8): {flops / 1e9:.1f} GFLOPs per image "
          "(forward + backward)")
    for gpu, peak in GPU_PEAK_TFLOPS.items():
        per_second = peak * 1e12 * UTILISATION / flops
        hours = ", ".join(f"{epochs} epochs {ESTIMATE_IMAGES * epochs / per_second / 3600:.0f} h"
                          for epochs in ESTIMATE_EPOCHS)
        print(f"  {gpu}: {peak:g} TFLOP/s x {UTILISATION:.0%} / {flops / 1e9:.1f} GFLOPs = {per_second:.0f} img/s; "
              f"{ESTIMATE_IMAGES:,} images: {hours}")


if __name__ == "__main__":
    main()
