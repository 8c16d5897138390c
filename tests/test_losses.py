"""Tversky-family losses: the maths, checked against nnU-Net's own soft Dice where they coincide."""

import pytest
import torch
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1

from pdac.train.losses import TverskyLoss, TverskyWithIgnore


def logits_from_probs(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p.clamp_min(1e-6))


@pytest.mark.parametrize("batch_dice", [False, True])
def test_half_half_tversky_equals_soft_dice(batch_dice):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 7, 8)
    y = torch.randint(0, 3, (2, 1, 6, 7, 8))
    tversky = TverskyLoss(0.5, 0.5, batch_dice=batch_dice, smooth=0)(x, y)
    dice_loss = MemoryEfficientSoftDiceLoss(softmax_helper_dim1, batch_dice=batch_dice, do_bg=False, smooth=0,
                                            ddp=False)
    dice = dice_loss(x, y)
    assert tversky.item() == pytest.approx(1 + dice.item(), abs=1e-6)  # nnU-Net's returns -Dice


def test_false_positive_costs_more_under_fp_heavy_weights():
    y = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    y[..., :2, :, :] = 1  # half the volume is foreground
    p = torch.zeros(1, 2, 4, 4, 4)
    p[:, 1] = (y[:, 0] == 1).float()
    p[:, 1, 2, 0, 0] = 1.0  # one false-positive voxel, no misses
    p[:, 0] = 1 - p[:, 1]
    x = logits_from_probs(p)
    fp_heavy = TverskyLoss(0.7, 0.3, smooth=0)(x, y)
    fn_heavy = TverskyLoss(0.3, 0.7, smooth=0)(x, y)
    assert fp_heavy > fn_heavy > 0
    # and a miss costs more under FN-heavy weights
    p2 = torch.zeros(1, 2, 4, 4, 4)
    p2[:, 1] = (y[:, 0] == 1).float()
    p2[:, 1, 0, 0, 0] = 0.0
    p2[:, 0] = 1 - p2[:, 1]
    x2 = logits_from_probs(p2)
    assert TverskyLoss(0.3, 0.7, smooth=0)(x2, y) > TverskyLoss(0.7, 0.3, smooth=0)(x2, y)


@pytest.mark.parametrize("gamma", [1.0, 0.75, 2.0])
def test_perfect_prediction_has_about_zero_loss(gamma):
    y = torch.randint(0, 3, (2, 1, 5, 5, 5))
    x = torch.nn.functional.one_hot(y[:, 0], 3).permute(0, 4, 1, 2, 3).float() * 40.0
    assert TverskyLoss(0.7, 0.3, gamma=gamma)(x, y).item() < 1e-3


@pytest.mark.parametrize("loss", [
    TverskyLoss(0.7, 0.3), TverskyLoss(0.7, 0.3, gamma=0.75), TverskyLoss(0.3, 0.7, batch_dice=True),
])
def test_gradients_are_finite_even_at_perfect_prediction(loss):
    y = torch.randint(0, 3, (2, 1, 5, 5, 5))
    for x0 in (torch.randn(2, 3, 5, 5, 5),
               torch.nn.functional.one_hot(y[:, 0], 3).permute(0, 4, 1, 2, 3).float() * 40.0):
        x = x0.clone().requires_grad_(True)
        loss(x, y).backward()
        assert torch.isfinite(x.grad).all()


def test_background_is_excluded_by_default():
    """The default loss is the mean of 1 - TI over the foreground classes, computed here by hand."""
    torch.manual_seed(2)
    x = torch.randn(1, 3, 5, 5, 5)
    y = torch.randint(0, 3, (1, 1, 5, 5, 5))
    p = torch.softmax(x, 1)
    onehot = torch.nn.functional.one_hot(y[:, 0], 3).permute(0, 4, 1, 2, 3).float()
    tp = (p * onehot).sum((0, 2, 3, 4))
    fp = (p * (1 - onehot)).sum((0, 2, 3, 4))
    fn = ((1 - p) * onehot).sum((0, 2, 3, 4))
    per_class = 1 - tp / (tp + 0.7 * fp + 0.3 * fn)
    assert TverskyLoss(0.7, 0.3, smooth=0)(x, y).item() == pytest.approx(per_class[1:].mean().item(), rel=1e-5)
    assert TverskyLoss(0.7, 0.3, smooth=0, do_bg=True)(x, y).item() == pytest.approx(per_class.mean().item(), rel=1e-5)


def test_ignore_label_voxels_do_not_count():
    torch.manual_seed(1)
    y = torch.randint(0, 2, (1, 1, 6, 6, 6))
    x = torch.randn(1, 2, 6, 6, 6)
    loss = TverskyWithIgnore(TverskyLoss(0.7, 0.3), weight_ce=1.0, ignore_label=2)
    y_ign = y.clone()
    y_ign[..., :3, :, :] = 2
    x_changed = x.clone()
    x_changed[..., :3, :, :] = torch.randn(1, 2, 3, 6, 6) * 10  # predictions under the ignore label
    assert loss(x, y_ign).item() == pytest.approx(loss(x_changed, y_ign).item(), rel=1e-5)
