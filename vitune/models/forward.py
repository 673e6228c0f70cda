"""Running a classifier over uint8 pixels: normalisation, batched logits, logits -> scores.

Shared by training (evaluation), heads (embeddings), evaluate and predict so every path
preprocesses exactly as training did. Regression outputs are trained on the target scaled to
[0, 1] with the training split's range; that range and the loss live in the model config
(``vitune_label_range``, ``vitune_regression_loss``) so any saved model can be inverted
(:meth:`vitune.tasks.regression.Regression.scores`).
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from vitune.errors import UserError
from vitune.models.aliases import Preprocessing


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """``device`` checked against this machine; ``None`` = the first GPU when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UserError(f"--device {device!r} is not a device: use cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and (not torch.cuda.is_available()
                                    or (resolved.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"--device {device}: no such CUDA GPU here ({torch.cuda.device_count()} found); use --device cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise UserError(f"--device {device}: only cpu and cuda devices are supported")
    return resolved


def normalize(pixels: torch.Tensor, prep: Preprocessing, peak: float = 255.0) -> torch.Tensor:
    """uint8 ``[B, C, S, S]`` -> float ``(x / peak - mean) / std`` on the same device (one fused pass).

    ``C`` is 3, or 1 for a grayscale DATASET_DIR: the one channel broadcasts to RGB in the same pass.
    ``peak`` is 1 for pixels already scaled to [0, 1] (after augmentation).
    """
    x = pixels.to(torch.float32)
    mean = torch.tensor(prep.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return torch.addcmul(-mean / std, x, 1.0 / (peak * std))


CPU_FORWARD_IMAGES = 8
"""Images per forward pass on the CPU, whatever the batch size. A ViT's per-layer activations for 8 images
stay in the caches where 32 images' spill out: ``bench/forward_pass_size.py`` measured ViT-S/16 at 224 px
on a 2-core Xeon 1.26x as fast at 8 images per pass as at 32 in torch, 1.08x in ONNX Runtime fp32 and
1.33x in int8. The batch size still sets how many images are decoded, scored and written together."""


def forward_chunks(pixels: np.ndarray, device: torch.device | str = "cpu") -> list[np.ndarray]:
    """A batch as the pieces one forward pass takes: :data:`CPU_FORWARD_IMAGES` at a time on the CPU, whole
    on a GPU (where a larger batch only fills the device better)."""
    if torch.device(device).type != "cpu" or len(pixels) <= CPU_FORWARD_IMAGES:
        return [pixels]
    return [pixels[start : start + CPU_FORWARD_IMAGES] for start in range(0, len(pixels), CPU_FORWARD_IMAGES)]


def chunked_forward(
    forward: Callable[[np.ndarray], Sequence[np.ndarray | None]], pixels: np.ndarray, device: torch.device | str = "cpu",
) -> list[np.ndarray | None]:
    """``forward`` (a batch -> arrays with the batch axis first, or None) run on :func:`forward_chunks` of
    ``pixels``, its outputs concatenated back into whole-batch arrays (None stays None)."""
    pieces = [forward(chunk) for chunk in forward_chunks(pixels, device)]
    if len(pieces) == 1:
        return list(pieces[0])
    return [None if parts[0] is None else np.concatenate(parts) for parts in zip(*pieces)]


def pixel_batches(dataset, batch_size: int) -> Iterator[np.ndarray]:
    """uint8 pixel batches from a DATASET_DIR split (or any sequence of ``[C, S, S]`` arrays, C = 1 or 3)."""
    if hasattr(dataset, "with_format"):
        dataset = dataset.with_format("numpy", columns=["pixel_values"], dtype=np.uint8)
        for start in range(0, len(dataset), batch_size):
            yield dataset[start : start + batch_size]["pixel_values"]
    else:
        for start in range(0, len(dataset), batch_size):
            yield np.stack(dataset[start : start + batch_size])


@torch.inference_mode()
def batched_logits(
    model: torch.nn.Module,
    batches: Iterable[np.ndarray],
    prep: Preprocessing,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Logits of ``model`` over uint8 pixel batches, concatenated (model put in eval mode)."""
    model.eval().to(device)

    def forward(pixels: np.ndarray) -> list[np.ndarray]:
        x = normalize(torch.as_tensor(pixels, device=device), prep)
        return [model(pixel_values=x).logits.float().cpu().numpy()]

    outputs = [chunked_forward(forward, batch, device)[0] for batch in batches]
    if not outputs:
        return np.zeros((0, getattr(model.config, "num_labels", 1)), dtype=np.float32)
    return np.concatenate(outputs)
