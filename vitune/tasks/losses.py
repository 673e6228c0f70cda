"""The tasks' losses, each computed in float32 whatever the autocast dtype.

``torch.nn.functional`` is imported inside each loss: see :mod:`vitune.tasks.base`.
"""

from __future__ import annotations


def masked_binary_cross_entropy(logits, labels, pos_weight=None):
    """Mean binary cross-entropy over the known cells: an unknown target (NaN) adds no loss and no gradient.

    ``pos_weight`` (one per label) weighs the positive term, as in ``binary_cross_entropy_with_logits``.
    """
    import torch.nn.functional as F

    known = ~labels.isnan()
    cells = F.binary_cross_entropy_with_logits(logits.float(), labels.nan_to_num().float(), pos_weight=pos_weight,
                                               reduction="none")
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
