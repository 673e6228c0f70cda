"""``--tta none|flip|crops``: test-time augmentation, the one place where views of a batch are made and averaged.

A batch of uint8 images ``[B, C, S, S]`` becomes ``V`` views stacked view-major, ``[V * B, C, S, S]``,
scored in one forward pass on the device, and the views' scores are averaged back to ``[B, ...]``:

- ``none``: the batch untouched (``V = 1``), so the scores are exactly those without TTA;
- ``flip``: the batch and its horizontal mirror (``V = 2``);
- ``crops``: the batch and the five crops at the model's input size ``S`` (four corners and the
  centre) of the batch resized to ``S / 0.875`` (``V = 6``), the ten-crop/five-crop evaluation of
  AlexNet and ResNet papers and timm's ``crop_pct=0.875``.

What is averaged is the **calibrated probability** (or the regression value) of each view: every
view's logits are divided by the run's fitted temperature and passed through its sigmoid/softmax
first, then the mean is taken, so the averaged output is still a probability in [0, 1]; averaging
logits instead would change the calibration that the temperature was fitted for.

TTA wraps a scoring function (``uint8 batch -> scores``) rather than a backend: the same wrapper
serves the torch and ONNX backends (``--backend``) and the frozen-backbone heads (whose scores come
from each view's embedding), so none of them knows about views. Flip and crops are torchvision's
``transforms.v2.functional`` (``horizontal_flip``, ``resize`` with antialiasing, ``five_crop``, the
functional form of ``FiveCrop``), run on uint8 tensors on the scoring device; kornia's
``CenterCrop``/``hflip`` were checked too, but have no five-crop.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from vitune.config import TTA_MODES, check_choice

NO_TTA = "none"
FLIP = "flip"
CROPS = "crops"
CROP_RATIO = 0.875  # the crop covers 87.5 % of the resized side (torchvision's and timm's evaluation crop)
VIEWS = {NO_TTA: 1, FLIP: 2, CROPS: 6}  # the original view is always one of them

ScoreFunction = Callable[[np.ndarray], np.ndarray]
ScoreAndFeatures = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def resized_side(image_size: int) -> int:
    """The side the image is resized to before its five crops of ``image_size`` (224 -> 256)."""
    return round(image_size / CROP_RATIO)


class TestTimeAugmentation:
    """The views of ``mode`` (none, flip, crops), made on ``device`` (default: the CPU), and their average."""

    __test__ = False  # a library class whose name starts with "Test": not a pytest test class

    def __init__(self, mode: str = NO_TTA, device: torch.device | str | None = None):
        check_choice("tta", mode, TTA_MODES)
        self.mode = mode
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    @property
    def n_views(self) -> int:
        """How many views each image is scored under (1 for ``none``)."""
        return VIEWS[self.mode]

    def views(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """uint8 ``[B, C, S, S]`` -> its views ``[V * B, C, S, S]``, view-major (the original first).

        ``none`` returns ``pixels`` itself. Otherwise the views are a tensor on the device: a numpy
        array (zero-copy) when that is the CPU, since the ONNX backends and the heads take numpy.
        """
        if self.mode == NO_TTA:
            return pixels
        from torchvision.transforms.v2 import functional

        batch = torch.as_tensor(pixels, device=self.device)
        if self.mode == FLIP:
            views = [batch, functional.horizontal_flip(batch)]
        else:
            side = batch.shape[-1]
            larger = functional.resize(batch, [resized_side(side)] * 2, antialias=True)
            views = [batch, *functional.five_crop(larger, [side, side])]
        stacked = torch.cat(views)
        return stacked.numpy() if stacked.device.type == "cpu" else stacked

    def per_view(self, values: np.ndarray) -> np.ndarray:
        """Outputs of :meth:`views` ``[V * B, ...]`` regrouped as ``[V, B, ...]``."""
        values = np.asarray(values)
        return values.reshape(self.n_views, len(values) // self.n_views, *values.shape[1:])

    def average(self, values: np.ndarray) -> np.ndarray:
        """The mean over the views of each image: ``[V * B, ...]`` -> ``[B, ...]`` (``none``: ``values`` as given)."""
        if self.mode == NO_TTA:
            return values
        return self.per_view(values).mean(axis=0)

    def wrap(self, score: ScoreFunction) -> ScoreFunction:
        """``score`` (uint8 batch -> calibrated scores) applied to every view of a batch, the views averaged."""
        if self.mode == NO_TTA:
            return score

        def augmented(pixels: np.ndarray) -> np.ndarray:
            return self.average(score(self.views(pixels)))

        return augmented

    def wrap_with_features(self, score_and_features: ScoreAndFeatures) -> ScoreAndFeatures:
        """``score_and_features`` (uint8 batch -> calibrated scores, features) on every view of a batch: the
        views' scores averaged, the features of the original view (what the out-of-distribution check measures:
        the training statistics were fitted on images as they are)."""
        if self.mode == NO_TTA:
            return score_and_features

        def augmented(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            scores, features = score_and_features(self.views(pixels))
            return self.average(scores), self.per_view(features)[0]

        return augmented
