"""How much of a model ``--lora R`` trains: parameter counts of the real architectures, offline.

Run: ``.venv/bin/python bench/lora_parameters.py``. Builds ViT-B/16, DINOv2-S and Swin-T at their
published sizes with random weights (no download: counts do not depend on the weights) and a
14-label head, wraps each with vitune's own :func:`vitune.training.lora.add_lora` and prints the
``parameters`` entry metrics.json would get. Writes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitune.config import TrainConfig  # noqa: E402
from vitune.training.lora import add_lora, parameter_counts  # noqa: E402

LABELS = 14  # ChestX-ray14's findings
RANKS = (8, 16)


def models():
    """``(name, factory)`` of the architectures at their published sizes."""
    from transformers import (
        Dinov2Config,
        Dinov2ForImageClassification,
        SwinConfig,
        SwinForImageClassification,
        ViTConfig,
        ViTForImageClassification,
    )

    return [
        ("ViT-B/16", lambda: ViTForImageClassification(ViTConfig(num_labels=LABELS))),
        ("DINOv2-S/14", lambda: Dinov2ForImageClassification(
            Dinov2Config(hidden_size=384, num_attention_heads=6, num_labels=LABELS))),
        ("Swin-T", lambda: SwinForImageClassification(SwinConfig(num_labels=LABELS))),
    ]


def main() -> None:
    """Print one row per model and rank."""
    print(f"{'model':<12} {'rank':>4} {'trainable':>10} {'total':>12} {'share':>7}")
    for name, factory in models():
        full = parameter_counts(factory())["total"]
        print(f"{name:<12} {'full':>4} {full:>10,} {full:>12,} {100.0:>6.2f}%")
        for rank in RANKS:
            counts = parameter_counts(add_lora(factory(), TrainConfig(data="-", model=name, out="-", lora=rank)))
            share = 100 * counts["trainable"] / counts["total"]
            print(f"{name:<12} {rank:>4} {counts['trainable']:>10,} {counts['total']:>12,} {share:>6.2f}%")


if __name__ == "__main__":
    main()
