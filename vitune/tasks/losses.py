"""The tasks' losses, each computed in float32 whatever the autocast dtype.

``torch.nn.functional`` is imported inside each loss: see :mod:`vitune.tasks.base`.

Multi-label training takes ``--loss bce|focal|asl`` (:class:`MultiLabelLoss`): focal loss (Lin et
al. 2017) and the asymmetric loss of Ridnik et al. (2021) come from timm's
``AsymmetricLossMultiLabel`` with ``reduction="none"`` (focal is its symmetric case, ``gamma_neg =
gamma_pos``, no clipping); timm sums over every cell, so the unknown (NaN) cells are masked here,
as with BCE.
"""

from __future__ import annotations

from dataclasses import dataclass

MULTI_LABEL_LOSSES = ("bce", "focal", "asl")


def masked_binary_cross_entropy(logits, labels, pos_weight=None):
    """Mean binary cross-entropy over the known cells: an unknown target (NaN) adds no loss and no gradient.

    ``pos_weight`` (one per label) weighs the positive term, as in ``binary_cross_entropy_with_logits``.
    """
    import torch.nn.functional as F

    known = ~labels.isnan()
    cells = F.binary_cross_entropy_with_logits(logits.float(), labels.nan_to_num().float(), pos_weight=pos_weight,
                                               reduction="none")
    return (cells * known).sum() / known.sum().clamp(min=1)


@dataclass(frozen=True)
class MultiLabelLoss:
    """``--loss`` of a multi-label run and its parameters; called as ``loss(logits, labels, pos_weight)``."""

    kind: str = "bce"
    focal_gamma: float = 2.0
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05

    def __call__(self, logits, labels, pos_weight=None):
        """Mean loss over the known cells (an unknown target adds no loss and no gradient)."""
        if self.kind == "bce":
            return masked_binary_cross_entropy(logits, labels, pos_weight)
        from timm.loss import AsymmetricLossMultiLabel

        if self.kind == "focal":
            cell_loss = AsymmetricLossMultiLabel(gamma_neg=self.focal_gamma, gamma_pos=self.focal_gamma, clip=0.0,
                                                 reduction="none", pos_weight=pos_weight)
        else:
            cell_loss = AsymmetricLossMultiLabel(gamma_neg=self.asl_gamma_neg, gamma_pos=self.asl_gamma_pos,
                                                 clip=self.asl_clip, reduction="none", pos_weight=pos_weight)
        known = ~labels.isnan()
        cells = cell_loss(logits.float(), labels.nan_to_num().float())
        return (cells * known).sum() / known.sum().clamp(min=1)


def cross_entropy(logits, labels):
    """Softmax cross-entropy of class ids, or of soft float targets (mixup, label smoothing)."""
    import torch.nn.functional as F

    if labels.is_floating_point():
        targets = labels.float()
    else:
        targets = labels.long()
    return F.cross_entropy(logits.float(), targets)


def scaled_regression_loss(predictions, targets, kind: str = "mse"):
    """MSE of the predictions, or ``kind="bce"``: binary cross-entropy against targets scaled to [0, 1]."""
    import torch.nn.functional as F

    predictions = predictions.float().reshape(-1)
    targets = targets.float().reshape(-1)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(predictions, targets)
    return F.mse_loss(predictions, targets)
