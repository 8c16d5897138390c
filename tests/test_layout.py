"""CPU inference layout (`pdac.infer.models.use_channels_last`): the layout-keeping instance norm computes
nnU-Net's InstanceNorm3d, a network in the new layout gives the same logits as in the contiguous one, every
fold's checkpoint still loads into it, and the loaded CPU models really run channels-last."""

import copy
import json

import pytest
import torch
from conftest import WEIGHTS

from pdac.config import load_config
from pdac.infer.models import ChannelsLastInstanceNorm3d, load_model, use_channels_last
from pdac.infer.weights import verify_weights

CL = torch.channels_last_3d


@pytest.mark.parametrize("batch", [1, 2])
def test_layout_keeping_instance_norm_is_instance_norm(batch):
    torch.manual_seed(0)
    reference = torch.nn.InstanceNorm3d(6, eps=1e-5, affine=True)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 2.0)
        reference.bias.uniform_(-1.0, 1.0)
    norm = copy.deepcopy(reference)
    norm.__class__ = ChannelsLastInstanceNorm3d
    x = torch.randn(batch, 6, 5, 7, 9) * 3 + 2
    expected = reference(x)
    got = norm(x.to(memory_format=CL))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    if batch == 1:  # the batch-norm form keeps the layout; nnU-Net's sliding window always sends one patch
        assert got.is_contiguous(memory_format=CL)
    assert norm.state_dict().keys() == reference.state_dict().keys()


def _plain_conv_unet():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    torch.manual_seed(1)
    return PlainConvUNet(1, 3, (8, 16, 32), torch.nn.Conv3d, 3, (1, 2, 2), (2, 2, 2), 3, (2, 2),
                         conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                         nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}).eval()


def test_channels_last_network_gives_the_same_logits_and_loads_other_folds():
    plain = _plain_conv_unet()
    fast = use_channels_last(copy.deepcopy(plain))
    norms = [m for m in fast.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    assert norms and all(type(m) is ChannelsLastInstanceNorm3d for m in norms)
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=0, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(fast(x).float(), plain(x).float(), rtol=0, atol=0.1)
    other_fold = _plain_conv_unet()
    with torch.no_grad():
        for p in other_fold.parameters():
            p.add_(0.01)
    fast.load_state_dict(other_fold.state_dict())  # what nnU-Net's predictor does between folds
    with torch.no_grad():
        torch.testing.assert_close(fast(x), other_fold(x), rtol=0, atol=1e-4)
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=CL)


def test_cpu_models_are_loaded_channels_last():
    config = load_config()
    verified = verify_weights(WEIGHTS)
    model = load_model(verified.model(config.stage2.model), config.stage2, torch.device("cpu"))
    network = model.predictor.network
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(c.weight.is_contiguous(memory_format=CL) for c in convs)
    assert not any(type(m) is torch.nn.InstanceNorm3d for m in network.modules())
    assert json.dumps(sorted(network.state_dict())) == json.dumps(sorted(model.predictor.list_of_parameters[0]))
