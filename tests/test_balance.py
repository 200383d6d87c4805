import math

import pytest
import torch
from torch import nn

from mmvq.training.balance import (
    BalancerConfig,
    DWABalancer,
    GradNormBalancer,
    ParetoBalancer,
    StaticBalancer,
    UncertaintyBalancer,
    build_balancer,
    grad_norms,
    min_norm_weights,
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
        ("pareto", ParetoBalancer),
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


def test_gradnorm_pulls_weighted_norms_to_training_rate_power_alpha():
    # GradNorm's fixed point: w_m G_m proportional to r_m ** alpha, r_m = L_m / L_m(0).
    cfg = BalancerConfig(name="gradnorm", gradnorm_alpha=1.5, gradnorm_lr=0.02)
    bal = build_balancer(cfg, MODS)
    shared, losses = _shared_problem()
    params = list(shared.parameters())
    bal.combine(losses, params)  # records L(0)
    trained = {"image": 0.25 * losses["image"], "text": losses["text"]}  # image trained 4x faster
    norms = grad_norms(trained, params)
    for _ in range(400):
        bal.combine(trained, params)
    w = bal.weights()
    ratio = (w["image"] * norms["image"]) / (w["text"] * norms["text"])
    assert ratio == pytest.approx(0.25**1.5, rel=0.15)


def test_grad_shares_are_the_weighted_norms_shares():
    shared, losses = _shared_problem()
    params = list(shared.parameters())
    bal = build_balancer(BalancerConfig(weights={"image": 0.5}), MODS)
    log = bal.combine(losses, params, log_grad_norms=True).log
    norms = grad_norms(losses, params)
    weighted = {"image": 0.5 * norms["image"], "text": norms["text"]}
    for m in MODS:
        assert log[f"balance/grad_share/{m}"] == pytest.approx(weighted[m] / sum(weighted.values()))


def _linear_problem(*directions):
    """Losses linear in one shared parameter: L_m = g_m . theta, so grad L_m = g_m exactly."""
    theta = nn.Parameter(torch.zeros(len(directions[0])))
    grads = [torch.tensor(d, dtype=torch.float32) for d in directions]
    names = ("image", "text", "audio")[: len(directions)]
    return theta, grads, {m: g @ theta for m, g in zip(names, grads)}


def test_min_norm_weights_two_gradients_closed_form():
    g1, g2 = torch.tensor([4.0, 1.0]).double(), torch.tensor([-1.0, 0.5]).double()
    gram = torch.stack([g1, g2]) @ torch.stack([g1, g2]).T
    alpha = min_norm_weights(gram)
    # min over a in [0, 1] of |a g1 + (1 - a) g2|^2: a = (g2 - g1) . g2 / |g1 - g2|^2
    a = float((g2 - g1) @ g2 / (g1 - g2).pow(2).sum())
    assert float(alpha[0]) == pytest.approx(a, rel=1e-9) and float(alpha.sum()) == pytest.approx(1)


def test_pareto_resolves_a_two_task_conflict():
    theta, (ga, gb), losses = _linear_problem([10.0, 1.0], [-1.0, 0.5])
    assert float(ga @ gb) < 0  # the two losses conflict
    static = ga + gb
    assert float(static @ gb) < 0  # the plain sum's step would increase the text loss
    bal = build_balancer(BalancerConfig(name="pareto", pareto_max_weight=100.0), MODS)
    res = bal.combine(losses, [theta], log_grad_norms=True)
    res.loss.backward()
    d = theta.grad
    # a step along -d increases neither loss to first order (d . g_m >= 0 for both)
    assert float(d @ ga) >= -1e-6 and float(d @ gb) >= -1e-6
    # and it is the min-norm direction, rescaled to |ga| + |gb| (below the cap)
    alpha = min_norm_weights(torch.stack([ga, gb]).double() @ torch.stack([ga, gb]).double().T)
    direction = (alpha[0] * ga + alpha[1] * gb).float()
    assert torch.allclose(d / d.norm(), direction / direction.norm(), atol=1e-5)
    assert float(d.norm()) == pytest.approx(float(ga.norm() + gb.norm()), rel=1e-4)
    assert res.weights["text"] > res.weights["image"]  # the weaker gradient gains weight
    assert res.log["balance/conflict"] == 1.0
    assert float(bal.conflict_steps) == 1 and float(bal.steps) == 1
    assert bal.weights() == pytest.approx(res.weights)
    # a real small step lowers both losses
    with torch.no_grad():
        after = theta - 1e-3 * d
    assert float(ga @ after) < 0 and float(gb @ after) < 0


def test_pareto_three_tasks_no_loss_increases_and_weights_capped():
    theta, grads, losses = _linear_problem([5.0, 0.0, 1.0], [-1.0, 1.0, 0.0], [0.0, -2.0, 0.5])
    bal = build_balancer(
        BalancerConfig(name="pareto", pareto_max_weight=3.0), ("image", "text", "audio")
    )
    bal.combine(losses, [theta]).loss.backward()
    for g in grads:
        assert float(theta.grad @ g) >= -1e-6
    # nearly opposite gradients: the min-norm point is ~0, the rescaling is capped, not clipped
    theta, (ga, gb), losses = _linear_problem([1.0, 0.0], [-1.0, 1e-3])
    bal_two = build_balancer(BalancerConfig(name="pareto", pareto_max_weight=3.0), MODS)
    res = bal_two.combine(losses, [theta])
    assert max(res.weights.values()) == pytest.approx(3.0, rel=1e-6)
    assert all(w <= 3.0 + 1e-9 for w in res.weights.values())


def test_pareto_without_conflict_keeps_configured_weights():
    theta, (ga, gb), losses = _linear_problem([1.0, 2.0], [0.5, -0.1])
    assert float(ga @ gb) > 0
    bal = build_balancer(BalancerConfig(name="pareto", weights={"image": 0.5}), MODS)
    res = bal.combine(losses, [theta], log_grad_norms=True)
    assert res.weights == pytest.approx({"image": 0.5, "text": 1.0})
    assert res.log["balance/conflict"] == 0.0
    assert res.log["balance/grad_norm/text"] == pytest.approx(float(gb.norm()), rel=1e-6)
    # a subset of modalities, and a modality whose loss does not reach the shared layer
    assert torch.allclose(bal.combine({"text": losses["text"]}, [theta]).loss, losses["text"])
    detached = {"image": losses["image"], "text": torch.tensor(2.0)}
    assert bal.combine(detached, [theta]).weights == pytest.approx({"image": 0.5, "text": 1.0})
    with pytest.raises(ValueError, match="shared parameters"):
        bal.combine(losses, None)
    with pytest.raises(ValueError, match="pareto_max_weight"):
        BalancerConfig(name="pareto", pareto_max_weight=0.0)
