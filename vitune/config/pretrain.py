"""PretrainConfig: the settings of `vitune pretrain`, masked-autoencoder pre-training on unlabeled images.

The defaults are the published MAE recipe (He et al. 2022, facebookresearch/mae PRETRAIN.md): 75 %
of the patches masked, a loss on normalised pixels, a 512-wide, 8-deep decoder, AdamW with betas
(0.9, 0.95) and weight decay 0.05, a base learning rate of 1.5e-4 scaled by the total batch over 256,
and a cosine schedule after a warm-up (40 of 800 epochs there: 5 %). The random resized crop keeps
50-100 % of the image, as medical_mae pre-trains on chest X-rays (it also masks 90 %: ``--mask-ratio
0.9``). The Trainer settings are :class:`~vitune.config.train.TrainerConfig`'s, shared with `vitune train`.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitune.config.base import check_positive
from vitune.config.train import TrainerConfig
from vitune.errors import UserError

BASE_BATCH = 256  # MAE's linear scaling rule: lr = base_lr * total batch / 256
DECODER_WIDTH = 512  # the MAE paper's decoder
DECODER_DEPTH = 8
DECODER_HEAD_WIDTH = 32  # 512 wide with 16 heads
DECODER_MLP_RATIO = 4


@dataclass
class PretrainConfig(TrainerConfig):
    """Settings of ``vitune pretrain``; checks itself on construction.

    Args:
        data: DATASET_DIR (labels ignored; its validation split held back), or a folder of images or DICOMs.
        model: MAE checkpoint (continued), ViT checkpoint or alias (its encoder starts the MAE, with a new
          decoder), or a model config (a directory with config.json and no weights, or the JSON file): a random start.
        epochs: Pre-training epochs (MAE and medical_mae: 800).
        lr: Peak learning rate (default: --base-lr x total batch / 256).
        batch_size: Per-device training batch size (total batch = batch size x grad accum x processes).
        warmup: Warm-up as a fraction of the steps (MAE: 40 of 800 epochs).
        weight_decay: AdamW weight decay ([CLS] and mask tokens and position embeddings keep none).
        base_lr: Learning rate per 256 images of total batch, used when --lr is not given.
        adam_betas: AdamW betas (MAE: 0.9 0.95).
        image_size: Square size of a plain folder's images (default: the model's); a DATASET_DIR keeps its own.
        mask_ratio: Share of the patches masked (MAE: 0.75; medical_mae on X-rays: 0.9).
        norm_pix_loss: Reconstruct each patch's normalised pixels (the MAE paper's better target).
        decoder_width: Decoder width (default 512, the MAE paper's; an MAE checkpoint keeps its own).
        decoder_depth: Decoder blocks (default 8; small encoders want fewer; an MAE checkpoint keeps its own).
        crop_scale: Random resized crop: the least and most of the image area kept (medical_mae: 0.5 1).
        val_fraction: A plain folder's share of images held back for the reconstruction loss and grid.
        workers: Processes decoding a plain folder (default: all cores).
    """

    noun = "pre-training setting"
    usage = "vitune pretrain --data DATASET_DIR|IMAGE_FOLDER --model MODEL --out RUN_DIR"

    epochs: float = 100
    lr: float | None = None
    batch_size: int = 64
    warmup: float = 0.05
    weight_decay: float = 0.05
    base_lr: float = 1.5e-4
    adam_betas: tuple[float, float] = (0.9, 0.95)
    image_size: int | None = None
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    decoder_width: int | None = None
    decoder_depth: int | None = None
    crop_scale: tuple[float, float] = (0.5, 1.0)
    val_fraction: float = 0.05
    workers: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("base_lr", self.base_lr)
        self.adam_betas = self._pair("adam_betas", self.adam_betas)
        self.crop_scale = self._pair("crop_scale", self.crop_scale)
        if not all(0.0 <= beta < 1.0 for beta in self.adam_betas):
            raise UserError(f"--adam-betas {self.adam_betas} must both lie in [0, 1): MAE uses 0.9 0.95")
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise UserError(f"--crop-scale {low:g} {high:g}: give the least and most share of the image area kept, "
                            "0 < least <= most <= 1 (e.g. 0.5 1)")
        if not 0.0 < self.mask_ratio < 1.0:
            raise UserError(f"--mask-ratio {self.mask_ratio} is the share of patches masked: give a value in (0, 1)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"--val-fraction {self.val_fraction} is outside [0, 1): pass a fraction such as 0.05")
        if self.image_size is not None and not 1 <= self.image_size <= 4096:
            raise UserError(f"--image-size {self.image_size} is out of range: use 1 to 4096 (224 is usual)")
        for name in ("decoder_width", "decoder_depth", "workers"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        width = self.decoder_width
        if width is not None and width % decoder_heads(width):
            raise UserError(f"--decoder-width {width}: give a multiple of {DECODER_HEAD_WIDTH} (the decoder's "
                            f"attention heads are {DECODER_HEAD_WIDTH} wide, as in MAE's 512-wide decoder)")

    def _pair(self, name: str, value) -> tuple[float, float]:
        """Two numbers (a YAML list, a tuple) as a tuple of floats, else a :class:`UserError`."""
        try:
            first, second = (float(item) for item in value)
        except (TypeError, ValueError):
            raise UserError(f"{self.flag(name)} takes two numbers, e.g. {self.flag(name)} "
                            f"{' '.join(f'{v:g}' for v in self.default(name))}") from None
        return first, second

    def learning_rate(self, world_size: int) -> float:
        """``--lr``, else ``--base-lr`` scaled by the total batch over 256 (MAE's linear scaling rule)."""
        if self.lr is not None:
            return self.lr
        return self.base_lr * self.batch_size * self.grad_accum * world_size / BASE_BATCH


def decoder_heads(width: int) -> int:
    """Attention heads of a ``width``-wide decoder: 32-wide heads (one for a narrower decoder)."""
    return max(1, width // DECODER_HEAD_WIDTH)
