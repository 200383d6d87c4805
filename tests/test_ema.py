"""EMA of the weights (mmvq/training/ema.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

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
    start = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        net.lin.weight.add_(1.0)
        net.norm.running_mean.fill_(5.0)
        net.norm.num_batches_tracked.fill_(7)
    ema.update(net)
    torch.testing.assert_close(
        ema.model.lin.weight, 0.75 * start["lin.weight"] + 0.25 * net.lin.weight
    )
    torch.testing.assert_close(ema.model.lin.bias, start["lin.bias"])  # bias unchanged in net
    assert torch.equal(ema.model.norm.running_mean, net.norm.running_mean)
    assert int(ema.model.norm.num_batches_tracked) == 7
    assert not any(p.requires_grad for p in ema.model.parameters()) and not ema.model.training
    assert ema.num_updates == 1


def test_state_dict_round_trip():
    net = _Net()
    ema = ModelEMA(net, decay=0.9)
    with torch.no_grad():
        net.lin.weight.mul_(3)
    ema.update(net)
    ema.update(net)
    other = ModelEMA(_Net(), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 2
    for k, v in ema.model.state_dict().items():
        assert torch.equal(v, other.model.state_dict()[k])


def test_bad_decay_and_mismatched_models_are_errors():
    with pytest.raises(ValueError, match="decay must be a float in \\(0, 1\\)"):
        ModelEMA(_Net(), decay=1.0)
    ema = ModelEMA(_Net(), decay=0.5)
    with pytest.raises(ValueError, match="different parameters"):
        ema.update(nn.Linear(3, 2))
