"""EMA of the weights (mmvq/training/ema.py, on torch.optim.swa_utils.AveragedModel)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from mmvq.training.ema import ModelEMA


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)  # float running stats and an int64 counter (buffers)


def test_parameters_are_averaged_and_buffers_copied():
    torch.manual_seed(0)
    net = _Net()
    ema = ModelEMA(net, decay=0.75)
    assert isinstance(ema.averaged, AveragedModel) and ema.model is ema.averaged.module
    with torch.no_grad():
        net.lin.weight.add_(1.0)
    ema.update(net)  # the first update copies the live weights (W_0^EMA = W_0)
    first = {k: v.clone() for k, v in ema.model.state_dict().items()}
    assert torch.equal(first["lin.weight"], net.lin.weight)
    with torch.no_grad():
        net.lin.weight.add_(1.0)
        net.norm.running_mean.fill_(5.0)
        net.norm.num_batches_tracked.fill_(7)
    ema.update(net)
    torch.testing.assert_close(
        ema.model.lin.weight, 0.75 * first["lin.weight"] + 0.25 * net.lin.weight
    )
    torch.testing.assert_close(ema.model.lin.bias, first["lin.bias"])  # bias unchanged in net
    assert torch.equal(ema.model.norm.running_mean, net.norm.running_mean)
    assert int(ema.model.norm.num_batches_tracked) == 7
    assert not any(p.requires_grad for p in ema.model.parameters()) and not ema.model.training
    assert ema.num_updates == 2


def test_matches_a_hand_computed_average_over_many_steps():
    torch.manual_seed(1)
    net = _Net()
    ema = ModelEMA(net, decay=0.9)
    expected = None
    for _ in range(5):
        with torch.no_grad():
            net.lin.weight.add_(torch.randn_like(net.lin.weight))
        ema.update(net)
        live = net.lin.weight.detach().clone()
        expected = live if expected is None else 0.9 * expected + 0.1 * live
    torch.testing.assert_close(ema.model.lin.weight, expected)


def test_loads_a_checkpoint_of_the_earlier_hand_written_ema():
    net = _Net()
    legacy = {
        k: v.clone() + 1.0 if v.is_floating_point() else v.clone()
        for k, v in net.state_dict().items()
    }
    legacy["__num_updates__"] = torch.tensor(4, dtype=torch.int64)
    ema = ModelEMA(net, decay=0.5)
    ema.load_state_dict(legacy)
    assert ema.num_updates == 4
    torch.testing.assert_close(ema.model.lin.weight, net.lin.weight + 1.0)
    ema.update(net)  # an average already under way: the next update averages, not copies
    torch.testing.assert_close(ema.model.lin.weight, net.lin.weight + 0.5)


def test_state_dict_round_trip():
    net = _Net()
    ema = ModelEMA(net, decay=0.9)
    with torch.no_grad():
        net.lin.weight.mul_(3)
    ema.update(net)
    ema.update(net)
    other = ModelEMA(_Net(), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 2 and set(ema.state_dict()) >= {"n_averaged", "module.lin.weight"}
    for k, v in ema.model.state_dict().items():
        assert torch.equal(v, other.model.state_dict()[k])


def test_bad_decay_and_mismatched_models_are_errors():
    with pytest.raises(ValueError, match="decay must be a float in \\(0, 1\\)"):
        ModelEMA(_Net(), decay=1.0)
    ema = ModelEMA(_Net(), decay=0.5)
    with pytest.raises(ValueError, match="different parameters"):
        ema.update(nn.Linear(3, 2))
