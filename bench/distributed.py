"""Each training engine on two CPU processes (steps per second, peak memory per rank), and on GPUs on paper.

Run: ``.venv/bin/python bench/distributed.py`` (``--hidden 384 --layers 12``: ViT-S/16 at 32 px, 8 images
per rank, 12 steps of which the first 4 warm up). For each engine (DDP, ZeRO-2, ZeRO-3, FSDP
``full_shard`` and ``shard_grad_op``) it launches ``torchrun --nproc-per-node 2`` on this very script,
whose workers build the run with :func:`vitune.training.fine_tune.build_trainer` (the code
``vitune train`` runs) and train without evaluating or saving. Each rank reports its steps per second
after the warm-up and its resident memory: before the model is built, the most while training
(sampled after each step past the warm-up) and the peak of the whole process (``ru_maxrss``, which
counts loading the checkpoint whole on every rank before any engine shards it). At 32 px a ViT-S step is light, so the model's states, which the engines shard,
are a visible part of the memory.

Then the GPU expectation on paper: bytes per rank of the model states (weights, gradients, AdamW) of
ViT-B/16, ViT-L/16 and ViT-H/14 under each engine on 8 GPUs in bf16 mixed precision, as the ZeRO paper
counts them (Rajbhandari et al. 2020: 2 + 2 + 12 bytes per parameter), plus the activations of a batch of
64 at 224 px (Korthikanti et al. 2022: 34 s b h bytes per layer with fused attention, which keeps no
attention matrix). Parameter counts come from the real architectures built on the meta device.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ENGINES = {
    "DDP": {},
    "DeepSpeed ZeRO-2": {"deepspeed": "zero2"},
    "DeepSpeed ZeRO-3": {"deepspeed": "zero3"},
    "FSDP full_shard": {"fsdp": "full_shard"},
    "FSDP shard_grad_op": {"fsdp": "shard_grad_op"},
}
IMAGE_SIZE = 32
LABELS = ["a", "b", "c"]
GIB = 1024**3
GPUS = 8
BATCH = 64
# model-state bytes per parameter in bf16 mixed precision with AdamW (the ZeRO paper's count)
HALF_WEIGHTS, HALF_GRADIENTS, FP32_STATES = 2, 2, 12


def write_checkpoint(path: Path, hidden: int, layers: int) -> Path:
    """A random ViT (patch 16) with ``hidden`` width and ``layers`` blocks, and its image processor."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
                       intermediate_size=4 * hidden, image_size=IMAGE_SIZE, patch_size=16)
    ViTModel(config, add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(path)
    return path


def write_dataset(path: Path, images: int) -> Path:
    """A multi-label DATASET_DIR of random ``IMAGE_SIZE`` images (throughput does not depend on the pixels)."""
    import datasets

    from vitune.data.dataset_dir import DatasetInfo, features_for

    rng = np.random.default_rng(0)
    splits = {}
    for split, count in (("train", images), ("validation", 16)):
        labels = (rng.random((count, len(LABELS))) < 0.4).astype(np.float32)
        splits[split] = datasets.Dataset.from_dict(
            {"pixel_values": rng.integers(0, 256, (count, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8),
             "labels": labels.tolist(), "file": [f"{i}.png" for i in range(count)], "group": [None] * count},
            features=features_for("multi_label", IMAGE_SIZE))
    datasets.DatasetDict(splits).save_to_disk(str(path))
    DatasetInfo(task="multi_label", labels=LABELS, image_size=IMAGE_SIZE, format="synthetic", source="bench",
                splits={split: len(rows) for split, rows in splits.items()}).save(path)
    return path


def work(args) -> None:
    """One rank: train ``args.steps`` steps with the engine ``args.worker`` names and write its figures."""
    import psutil
    from transformers import TrainerCallback

    from vitune.config import TrainConfig
    from vitune.training.fine_tune import build_trainer

    process = psutil.Process()

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.resident: list[int] = []

        def on_step_end(self, train_args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            self.resident.append(process.memory_info().rss)

    resident_before = process.memory_info().rss
    config = TrainConfig(data=args.data, model=args.model, out=args.out, batch_size=args.batch_size,
                         max_steps=args.steps, lr=1e-4, **ENGINES[args.worker])
    trainer = build_trainer(config)
    trainer.args.eval_strategy = "no"  # a throughput run: no evaluation, no checkpoint
    trainer.args.save_strategy = "no"
    trainer.args.load_best_model_at_end = False
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()
    timed = clock.ends[args.warmup - 1:]
    figures = {
        "steps_per_second": (len(timed) - 1) / (timed[-1] - timed[0]),
        "resident_before_gib": resident_before / GIB,
        "resident_training_gib": max(clock.resident[args.warmup - 1:]) / GIB,
        "peak_resident_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
    }
    Path(args.report, f"rank{os.environ['RANK']}.json").write_text(json.dumps(figures))


def checkpoint_parameters(model: Path) -> int:
    """The number of parameters a safetensors checkpoint holds."""
    from safetensors import safe_open

    with safe_open(str(model / "model.safetensors"), "pt") as weights:
        return sum(int(np.prod(weights.get_slice(name).get_shape())) for name in weights.keys())


def launch(engine: str, data: Path, model: Path, work_dir: Path, args) -> list[dict]:
    """``torchrun --nproc-per-node 2`` on this script for ``engine``: each rank's figures."""
    report = work_dir / f"report-{engine.replace(' ', '-')}"
    report.mkdir()
    command = [str(Path(sys.executable).with_name("torchrun")), "--nproc-per-node", "2", __file__,
               "--worker", engine, "--data", str(data), "--model", str(model), "--out", str(report / "run"),
               "--report", str(report), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch-size", str(args.batch_size)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{done.stderr[-3000:]}")
    return [json.loads((report / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def measure(args) -> None:
    """The CPU table: each engine on two processes."""
    with tempfile.TemporaryDirectory() as folder:
        work_dir = Path(folder)
        model = write_checkpoint(work_dir / "model", args.hidden, args.layers)
        data = write_dataset(work_dir / "data", images=2 * args.batch_size * args.steps)
        parameters = checkpoint_parameters(model)
        print(f"ViT hidden {args.hidden}, {args.layers} layers ({parameters / 1e6:.1f} M parameters), {IMAGE_SIZE} px, "
              f"{args.batch_size} images per rank, 2 CPU processes (gloo), {torch.get_num_threads()} cores here\n")
        print("| engine | steps/s | before the model | while training | peak |")
        print("|---|---:|---:|---:|---:|")
        for engine in ENGINES:
            ranks = launch(engine, data, model, work_dir, args)
            cells = [" / ".join(f"{rank[key]:.2f}" for rank in ranks)
                     for key in ("resident_before_gib", "resident_training_gib", "peak_resident_gib")]
            print(f"| {engine} | {ranks[0]['steps_per_second']:.2f} | {' | '.join(cells)} |", flush=True)
        print("\nResident memory per rank in GiB (rank 0 / rank 1): before the model is built, the most while training "
              "(after the warm-up), and the peak of the whole process (loading the checkpoint included).")


def vit_sizes() -> list[tuple[str, int, object]]:
    """``(name, parameters, config)`` of ViT-B/16, ViT-L/16 and ViT-H/14 at 224 px, built on the meta device."""
    from transformers import ViTConfig, ViTForImageClassification

    configs = {
        "ViT-B/16": ViTConfig(),
        "ViT-L/16": ViTConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
        "ViT-H/14": ViTConfig(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120,
                              patch_size=14),
    }
    sizes = []
    for name, config in configs.items():
        with torch.device("meta"):
            model = ViTForImageClassification(config)
        sizes.append((name, sum(parameter.numel() for parameter in model.parameters()), config))
    return sizes


def model_state_bytes(parameters: int, gpus: int) -> dict[str, float]:
    """Bytes per rank of weights, gradients and AdamW state under each engine (bf16 mixed precision)."""
    whole = (HALF_WEIGHTS + HALF_GRADIENTS + FP32_STATES) * parameters
    return {
        "DDP": whole,
        "ZeRO-2 / FSDP shard_grad_op": HALF_WEIGHTS * parameters + (HALF_GRADIENTS + FP32_STATES) * parameters / gpus,
        "ZeRO-3 / FSDP full_shard": whole / gpus,
    }


def activation_bytes(config, batch: int) -> float:
    """Activations kept for the backward pass: 34 s b h bytes per layer (bf16, fused attention)."""
    tokens = (config.image_size // config.patch_size) ** 2 + 1
    return 34 * tokens * batch * config.hidden_size * config.num_hidden_layers


def on_paper() -> None:
    """The GPU table: memory per rank of each engine on ``GPUS`` GPUs at batch ``BATCH`` per GPU."""
    print(f"\nOn paper, per GPU of {GPUS}, bf16, AdamW, {BATCH} images of 224 px per GPU (GiB):\n")
    engines = list(model_state_bytes(1, GPUS))
    print("| model | parameters | " + " | ".join(f"states, {engine}" for engine in engines) + " | activations |")
    print("|---|---:|" + "---:|" * (len(engines) + 1))
    for name, parameters, config in vit_sizes():
        states = model_state_bytes(parameters, GPUS)
        cells = " | ".join(f"{states[engine] / GIB:.2f}" for engine in engines)
        print(f"| {name} | {parameters / 1e6:.0f} M | {cells} | {activation_bytes(config, BATCH) / GIB:.1f} |")


def main() -> None:
    """Measure the engines on two CPU processes (or be one of their ranks), then print the table on paper."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8, help="images per rank and step")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=4, help="first steps left out of the timing")
    parser.add_argument("--paper-only", action="store_true", help="print the GPU table on paper only")
    parser.add_argument("--worker", choices=list(ENGINES), help=argparse.SUPPRESS)
    for internal in ("--data", "--model", "--out", "--report"):
        parser.add_argument(internal, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        work(args)
        return
    if not args.paper_only:
        measure(args)
    on_paper()


if __name__ == "__main__":
    main()
