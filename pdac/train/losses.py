"""Tversky-family segmentation losses in nnU-Net's conventions.

Tversky index per class: TI = TP / (TP + fp_weight * FP + fn_weight * FN) on softmax probabilities.
The weights are named for what they penalise, never alpha/beta: the literature uses those both ways
round. fp_weight > fn_weight penalises false positives (the seed paper's setting: 0.7 / 0.3).
Like nnU-Net's own region losses: background excluded by default, `batch_dice` pools the batch,
`loss_mask` drops ignore-label voxels, and the deep-supervision wrapper is applied by the trainer.
"""

from __future__ import annotations

import torch
from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1
from torch import nn


class TverskyLoss(nn.Module):
    """1 - TI (or (1 - TI) ** gamma, the focal Tversky loss), averaged over foreground classes."""

    def __init__(self, fp_weight: float = 0.7, fn_weight: float = 0.3, gamma: float = 1.0,
                 batch_dice: bool = False, do_bg: bool = False, smooth: float = 1e-5, apply_nonlin=softmax_helper_dim1):
        super().__init__()
        if fp_weight < 0 or fn_weight < 0 or fp_weight + fn_weight == 0:
            raise ValueError("fp_weight and fn_weight must be non-negative and not both zero")
        self.fp_weight, self.fn_weight, self.gamma = fp_weight, fn_weight, gamma
        self.batch_dice, self.do_bg, self.smooth = batch_dice, do_bg, smooth
        self.apply_nonlin = apply_nonlin

    def tversky_index(self, x: torch.Tensor, y: torch.Tensor, loss_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per (sample, class) index, or per class with batch_dice. `x` logits (b, c, ...), `y` labels."""
        if self.apply_nonlin is not None:
            x = self.apply_nonlin(x)
        axes = tuple(range(2, x.ndim))
        with torch.no_grad():
            if y.ndim != x.ndim:
                y = y.view((y.shape[0], 1, *y.shape[1:]))
            if y.shape == x.shape:
                y_onehot = y.to(torch.float32)
            else:
                y_onehot = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
                y_onehot.scatter_(1, y.long(), 1)
            if not self.do_bg:
                y_onehot = y_onehot[:, 1:]
            if loss_mask is not None:
                y_onehot = y_onehot * loss_mask
            sum_gt = y_onehot.sum(axes, dtype=torch.float32)
        if not self.do_bg:
            x = x[:, 1:]
        if loss_mask is not None:
            x = x * loss_mask
        tp = (x * y_onehot).sum(axes, dtype=torch.float32)
        sum_pred = x.sum(axes, dtype=torch.float32)
        if self.batch_dice:
            tp, sum_pred, sum_gt = tp.sum(0), sum_pred.sum(0), sum_gt.sum(0)
        fp, fn = sum_pred - tp, sum_gt - tp
        return (tp + self.smooth) / (tp + self.fp_weight * fp + self.fn_weight * fn + self.smooth).clamp_min(1e-8)

    def forward(self, x, y, loss_mask=None):
        ti = self.tversky_index(x, y, loss_mask)
        loss = (1 - ti).clamp_min(0)
        if self.gamma != 1.0:
            loss = loss.clamp_min(1e-7) ** self.gamma  # finite gradient at TI = 1 for gamma < 1
        return loss.mean()


class TverskyWithIgnore(nn.Module):
    """Applies the ignore label the way nnU-Net's DC_and_CE_loss does, optionally adding CE."""

    def __init__(self, tversky: TverskyLoss, weight_ce: float = 0.0, weight_tversky: float = 1.0,
                 ignore_label: int | None = None):
        super().__init__()
        self.tversky, self.weight_ce, self.weight_tversky = tversky, weight_ce, weight_tversky
        self.ignore_label = ignore_label
        self.ce = RobustCrossEntropyLoss(ignore_index=ignore_label if ignore_label is not None else -100)

    def forward(self, net_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.ignore_label is not None:
            mask = target != self.ignore_label
            target_t = torch.where(mask, target, 0)
            num_fg = mask.sum()
        else:
            mask, target_t, num_fg = None, target, 1
        loss = self.weight_tversky * self.tversky(net_output, target_t, loss_mask=mask)
        if self.weight_ce and num_fg > 0:
            loss = loss + self.weight_ce * self.ce(net_output, target[:, 0])
        return loss
