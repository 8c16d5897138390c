"""Tversky-family trainers: small nnUNetTrainer subclasses that override `_build_loss` only (plus AdamW twins)."""

import numpy as np
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.loss.nnUNetTrainerCELoss import nnUNetTrainerCELoss
from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerAdam1en3

from pdac.train.losses import TverskyLoss, TverskyWithIgnore


def _with_deep_supervision(trainer: nnUNetTrainer, loss):
    """nnU-Net's weighting: halve per resolution level, drop the lowest, normalise."""
    if not trainer.enable_deep_supervision:
        return loss
    weights = np.array([1 / (2**i) for i in range(len(trainer._get_deep_supervision_scales()))])
    weights[-1] = 1e-6 if trainer.is_ddp else 0
    return DeepSupervisionWrapper(loss, weights / weights.sum())


class nnUNetTrainerTverskyLoss(nnUNetTrainer):
    """Tversky loss, fp_weight 0.7 / fn_weight 0.3: penalises false positives (the seed paper's setting)."""

    fp_weight, fn_weight, gamma = 0.7, 0.3, 1.0
    weight_ce = 0.0

    def _build_loss(self):
        assert not self.label_manager.has_regions, "region-based training is not supported by this trainer"
        tversky = TverskyLoss(self.fp_weight, self.fn_weight, self.gamma,
                              batch_dice=self.configuration_manager.batch_dice, do_bg=False)
        loss = TverskyWithIgnore(tversky, weight_ce=self.weight_ce, ignore_label=self.label_manager.ignore_label)
        return _with_deep_supervision(self, loss)


class nnUNetTrainerTverskyLossFNHeavy(nnUNetTrainerTverskyLoss):
    """Tversky with fp_weight 0.3 / fn_weight 0.7: penalises misses (the weighting the seed's code used)."""

    fp_weight, fn_weight = 0.3, 0.7


class nnUNetTrainerTverskyLossSymmetric(nnUNetTrainerTverskyLoss):
    """Tversky 0.5 / 0.5 = soft Dice (no CE): the symmetric control for the FP-heavy weighting. With the same
    smoothing it equals 1 + nnU-Net's MemoryEfficientSoftDiceLoss (tests/test_losses.py)."""

    fp_weight, fn_weight = 0.5, 0.5


class nnUNetTrainerTverskyCELoss(nnUNetTrainerTverskyLoss):
    """Tversky (fp 0.7 / fn 0.3) + cross-entropy, weighted 1:1 like nnU-Net's Dice + CE."""

    weight_ce = 1.0


class nnUNetTrainerFocalTverskyLoss(nnUNetTrainerTverskyLoss):
    """Focal Tversky (1 - TI) ** gamma, gamma 0.75 (= 1 / (4/3), Abraham & Khan's best setting)."""

    gamma = 0.75



# AdamW (lr 1e-3, nnU-Net's own optimiser variant) instead of SGD, one class per loss. Used where the budget is a
# few thousand iterations (the CPU demo weights and the synthetic study): there nnU-Net's SGD (lr 1e-2, momentum
# 0.99) has not yet found the lesion class, while AdamW has. For full-length training keep the SGD trainers above.
# nnU-Net's own default loss (Dice + CE, `nnUNetTrainer`) has its AdamW twin in nnU-Net: `nnUNetTrainerAdam1en3`
# (nnUNetTrainerAdam's AdamW, amsgrad, lr 1e-3, with nnUNetTrainer's `_build_loss`), the same optimiser as these.
class nnUNetTrainerCELoss_Adam1en3(nnUNetTrainerCELoss, nnUNetTrainerAdam1en3):
    pass


class nnUNetTrainerTverskyLoss_Adam1en3(nnUNetTrainerTverskyLoss, nnUNetTrainerAdam1en3):
    pass


class nnUNetTrainerTverskyLossFNHeavy_Adam1en3(nnUNetTrainerTverskyLossFNHeavy, nnUNetTrainerAdam1en3):
    pass


class nnUNetTrainerTverskyLossSymmetric_Adam1en3(nnUNetTrainerTverskyLossSymmetric, nnUNetTrainerAdam1en3):
    pass


class nnUNetTrainerFocalTverskyLoss_Adam1en3(nnUNetTrainerFocalTverskyLoss, nnUNetTrainerAdam1en3):
    pass


class nnUNetTrainerTverskyCELoss_Adam1en3(nnUNetTrainerTverskyCELoss, nnUNetTrainerAdam1en3):
    pass
