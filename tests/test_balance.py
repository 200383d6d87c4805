import math

import pytest
import torch
from torch import nn

from mmvq.training.balance import (
    BalancerConfig,
    DWABalancer,
    GradNormBalancer,
    StaticBalancer,
    UncertaintyBalancer,
    build_balancer,
    grad_norms,
)

MODS = ("image", "text")


def _shared_problem(scale_a=10.0, scale_b=1.0):
    """Two losses through one shared layer; loss a has a larger gradient on it."""
    torch.manual_seed(0)
    shared = nn.Linear(4, 4)
    x = torch.randn(16, 4)
    h = shared(x)
    return shared, {"image": scale_a * h.pow(2).mean(), "text": scale_b * h.abs().mean()}


def test_build_by_name_and_unknown():
    for name, cls in [
        ("static", StaticBalancer),
        ("uncertainty", UncertaintyBalancer),
        ("gradnorm", GradNormBalancer),
        ("dwa", DWABalancer),
    ]:
        assert isinstance(build_balancer(BalancerConfig(name=name), MODS), cls)
    with pytest.raises(ValueError, match="choose one of"):
        BalancerConfig(name="magic")
    with pytest.raises(ValueError, match="weights\\['image'\\]"):
        BalancerConfig(weights={"image": -1.0})
    with pytest.raises(ValueError, match="unknown modality 'audio'"):
        build_balancer(BalancerConfig(weights={"audio": 1.0}), MODS)


def test_static_combines_with_weights_and_logs_grad_norms():
    shared, losses = _shared_problem()
    bal = build_balancer(BalancerConfig(weights={"image": 0.5}), MODS)
    res = bal.combine(losses, list(shared.parameters()), log_grad_norms=True)
    expected = 0.5 * losses["image"] + 1.0 * losses["text"]
    assert torch.allclose(res.loss, expected)
    assert res.weights == {"image": 0.5, "text": 1.0}
    norms = grad_norms(losses, list(shared.parameters()))
    assert res.log["balance/grad_norm/image"] == pytest.approx(norms["image"])
    manual = math.sqrt(
        sum(
            float(g.pow(2).sum())
            for g in torch.autograd.grad(
                losses["text"], list(shared.parameters()), retain_graph=True
            )
        )
    )
    assert norms["text"] == pytest.approx(manual, rel=1e-6)
    # A subset of modalities is fine; an unknown one is not.
    assert torch.allclose(bal.combine({"text": losses["text"]}).loss, losses["text"])
    with pytest.raises(KeyError, match="unknown modality"):
        bal.combine({"audio": losses["text"]})


def test_uncertainty_learns_inverse_loss_weights():
    bal = build_balancer(BalancerConfig(name="uncertainty"), MODS)
    opt = torch.optim.Adam(bal.parameters(), lr=0.05)
    big, small = torch.tensor(4.0), torch.tensor(0.25)
    res = bal.combine({"image": big, "text": small})
    expected = 0.5 * big + 0.5 * small  # log_vars start at 0
    assert torch.allclose(res.loss, expected)
    for _ in range(600):
        opt.zero_grad()
        bal.combine({"image": big, "text": small}).loss.backward()
        opt.step()
    w = bal.weights()
    # Optimum of 0.5 exp(-s) L + 0.5 s is exp(-s) = 1 / L.
    assert w["image"] == pytest.approx(0.25, rel=0.05)
    assert w["text"] == pytest.approx(4.0, rel=0.05)


def test_gradnorm_equalises_gradient_norms_with_alpha_zero():
    cfg = BalancerConfig(name="gradnorm", gradnorm_alpha=0.0, gradnorm_lr=0.05)
    bal = build_balancer(cfg, MODS)
    shared, losses = _shared_problem()
    params = list(shared.parameters())
    norms = grad_norms(losses, params)
    start_ratio = norms["image"] / norms["text"]
    assert start_ratio > 3  # the problem is unbalanced to begin with
    for _ in range(200):
        res = bal.combine(losses, params, log_grad_norms=True)
    w = bal.weights()
    weighted_ratio = (w["image"] * norms["image"]) / (w["text"] * norms["text"])
    assert abs(math.log(weighted_ratio)) < 0.15 * abs(math.log(start_ratio))
    assert sum(w.values()) == pytest.approx(2.0, rel=1e-5)
    assert torch.allclose(res.loss, w["image"] * losses["image"] + w["text"] * losses["text"])
    assert "balance/gradnorm_loss" in res.log
    # Its state is in buffers: it checkpoints and is not trained by the generator's optimizer.
    assert list(bal.parameters()) == []
    clone = build_balancer(cfg, MODS)
    clone.load_state_dict(bal.state_dict())
    assert clone.weights() == pytest.approx(w)
    with pytest.raises(ValueError, match="shared parameters"):
        bal.combine(losses, None)


def test_dwa_follows_rates_of_change():
    bal = build_balancer(BalancerConfig(name="dwa", dwa_temperature=2.0), MODS)
    assert bal.weights() == {"image": 1.0, "text": 1.0}
    bal.epoch_end({"image": 1.0, "text": 1.0})
    assert bal.weights() == {"image": 1.0, "text": 1.0}  # needs two windows
    bal.epoch_end({"image": 0.5, "text": 0.9})  # image improves fast, text slowly
    w = bal.weights()
    r = torch.tensor([0.5, 0.9]) / 2.0
    expected = torch.softmax(r, 0) * 2
    assert w["image"] == pytest.approx(float(expected[0]), rel=1e-5)
    assert w["text"] > w["image"]
    res = bal.combine({"image": torch.tensor(2.0), "text": torch.tensor(3.0)})
    assert float(res.loss) == pytest.approx(2.0 * w["image"] + 3.0 * w["text"], rel=1e-5)
