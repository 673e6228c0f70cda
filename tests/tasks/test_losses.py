"""The tasks' losses: float32, the batch label tensors they take, and unknown multi-label cells (NaN) masked."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from heads_support import with_unknowns

from vitune.tasks import MULTI_LABEL, REGRESSION, SINGLE_LABEL


def test_batch_labels_and_losses():
    multi = MULTI_LABEL.batch_labels([[1.0, 0.0], [0.0, 1.0]])
    assert multi.dtype == torch.float32 and multi.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    single = SINGLE_LABEL.batch_labels([2, 0])
    assert single.dtype == torch.long and single.tolist() == [2, 0]
    scaled = REGRESSION.batch_labels([10.0, 20.0], (10.0, 30.0))
    assert scaled.tolist() == pytest.approx([0.0, 0.5])
    logits = torch.zeros(2, 2)
    assert MULTI_LABEL.loss(logits, multi).item() == pytest.approx(np.log(2))
    assert SINGLE_LABEL.loss(torch.zeros(2, 3), single).item() == pytest.approx(np.log(3))
    assert REGRESSION.loss(torch.zeros(2, 1), scaled).item() == pytest.approx(0.125)
    assert REGRESSION.loss(torch.zeros(2, 1), scaled, "bce").item() == pytest.approx(np.log(2))


def test_the_loss_averages_the_known_cells_and_gives_unknown_ones_no_gradient():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor(with_unknowns((np.random.default_rng(0).random((6, 3)) < 0.5).astype(float)),
                          dtype=torch.float32)
    known = ~torch.isnan(labels)
    pos_weight = torch.tensor([1.0, 3.0, 0.5])
    loss = MULTI_LABEL.loss(logits, labels, pos_weight=pos_weight)
    cells = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(labels), pos_weight=pos_weight, reduction="none")
    assert loss.item() == pytest.approx(cells[known].mean().item(), rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[~known] == 0) and torch.all(logits.grad[known] != 0)
    full = torch.nan_to_num(labels)
    assert MULTI_LABEL.loss(logits, full).item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, full).item())


def test_focal_and_asl_reduce_to_bce_without_focusing_and_mask_unknown_cells():
    from vitune.tasks.losses import MultiLabelLoss

    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.5, 0.0]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0, float("nan")], [0.0, 1.0, 1.0]])
    bce = MultiLabelLoss("bce")(logits, labels)
    assert MultiLabelLoss("focal", focal_gamma=0.0)(logits, labels).item() == pytest.approx(bce.item(), rel=1e-5)
    assert MultiLabelLoss("asl", asl_gamma_neg=0.0, asl_gamma_pos=0.0, asl_clip=0.0)(logits, labels).item() == (
        pytest.approx(bce.item(), rel=1e-5))
    asl = MultiLabelLoss("asl")(logits, labels)
    asl.backward()
    assert logits.grad[0, 2].item() == 0.0 and torch.isfinite(asl)
    easy_negative = torch.tensor([[-4.0]])
    assert MultiLabelLoss("asl")(easy_negative, torch.zeros(1, 1)).item() == 0.0  # clipped: below the 0.05 margin
    assert MultiLabelLoss("focal")(easy_negative, torch.zeros(1, 1)).item() < 1e-3 * MultiLabelLoss("bce")(
        easy_negative, torch.zeros(1, 1)).item()
