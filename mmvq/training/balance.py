"""Modality balancing: how per-modality losses combine into one training loss.

A strong modality (many tokens, an easy loss) can starve the others of gradient through the shared
codebook and decoder. Each strategy here is one small class behind one interface,
:meth:`ModalityBalancer.combine`, chosen by name with :func:`build_balancer`:

- ``static``: fixed weights.
- ``uncertainty``: Kendall, Gal & Cipolla (2018): learned log-variances ``s_m``;
  ``L = sum_m 0.5 * exp(-s_m) * L_m + 0.5 * s_m``.
- ``gradnorm``: Chen et al. (2018): learned weights whose gradient norms on a shared layer are
  pulled towards ``mean_norm * r_m ** alpha``, ``r_m`` the relative inverse training rate.
- ``dwa``: Liu, Johns & Davison (2019), Dynamic Weight Average: ``w_m = M * softmax(r_m / T)``
  with ``r_m`` the ratio of the last two windows' mean losses.
- ``pareto``: for conflicting gradients, after MMPareto (Wei & Hu, ICML 2024): on the shared
  layer, when two modalities' gradients point against each other (negative inner product) the
  direction is the minimum-norm point of their convex hull (MGDA, Sener & Koltun 2018), along
  which no modality's loss increases to first order; its magnitude is raised back to the sum of the
  modalities' own gradient norms. Without a conflict the weights are the configured ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from mmvq.utils import distributed

__all__ = [
    "BalancerConfig",
    "BalanceResult",
    "ModalityBalancer",
    "StaticBalancer",
    "UncertaintyBalancer",
    "GradNormBalancer",
    "DWABalancer",
    "ParetoBalancer",
    "build_balancer",
    "min_norm_weights",
    "grad_norms",
    "BALANCERS",
]


@dataclass
class BalancerConfig:
    """Options of the modality balancer.

    Attributes:
        name: ``static`` | ``uncertainty`` | ``gradnorm`` | ``dwa`` | ``pareto``.
        weights: static weights (``static``) or initial weights (others); missing modalities
            weigh 1.
        gradnorm_alpha: GradNorm's asymmetry ``alpha`` (0 equalises gradient norms).
        gradnorm_lr: learning rate of GradNorm's weights (their own Adam optimizer).
        dwa_temperature: DWA's softmax temperature ``T``.
        pareto_max_weight: ``pareto``'s cap on any modality's weight (the magnitude rescaling
            would otherwise explode when the gradients nearly cancel).
    """

    name: str = "static"
    weights: dict[str, float] = field(default_factory=dict)
    gradnorm_alpha: float = 1.5
    gradnorm_lr: float = 0.025
    dwa_temperature: float = 2.0
    pareto_max_weight: float = 4.0

    def __post_init__(self) -> None:
        if self.name not in BALANCERS:
            raise ValueError(
                f"BalancerConfig.name={self.name!r} is not a balancer; choose one of "
                f"{sorted(BALANCERS)}"
            )
        for m, w in self.weights.items():
            if (
                not isinstance(w, (int, float))
                or isinstance(w, bool)
                or not math.isfinite(w)
                or w < 0
            ):
                raise ValueError(
                    f"BalancerConfig.weights[{m!r}] must be a finite number >= 0, got {w!r}"
                )
        if self.gradnorm_alpha < 0:
            raise ValueError(
                f"BalancerConfig.gradnorm_alpha must be >= 0, got {self.gradnorm_alpha!r}"
            )
        if self.gradnorm_lr <= 0:
            raise ValueError(f"BalancerConfig.gradnorm_lr must be > 0, got {self.gradnorm_lr!r}")
        if self.dwa_temperature <= 0:
            raise ValueError(
                f"BalancerConfig.dwa_temperature must be > 0, got {self.dwa_temperature!r}"
            )
        if not math.isfinite(self.pareto_max_weight) or self.pareto_max_weight <= 0:
            raise ValueError(
                f"BalancerConfig.pareto_max_weight must be a finite number > 0, got "
                f"{self.pareto_max_weight!r}"
            )


class BalanceResult(NamedTuple):
    """What :meth:`ModalityBalancer.combine` returns.

    Attributes:
        loss: the combined loss to back-propagate.
        weights: the effective weight of each modality's loss this step.
        log: scalars to log (``balance/weight/<m>``, ``balance/grad_norm/<m>``, ...).
    """

    loss: Tensor
    weights: dict[str, float]
    log: dict[str, float]


def grad_norms(losses: Mapping[str, Tensor], params: Sequence[Tensor]) -> dict[str, float]:
    """L2 norm of each loss's gradient on ``params`` (the shared layer), without touching
    ``.grad``."""
    params = [p for p in params if p.requires_grad]
    norms = {}
    for m, loss in losses.items():
        if not loss.requires_grad:
            norms[m] = 0.0
            continue
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        total = sum(float(g.detach().float().pow(2).sum()) for g in grads if g is not None)
        norms[m] = math.sqrt(total)
    return norms


class ModalityBalancer(nn.Module):
    """One interface for every strategy. Its parameters (if any) join the generator's optimizer,
    except GradNorm's, which it updates itself."""

    name: ClassVar[str] = ""

    def __init__(self, config: BalancerConfig, modalities: Sequence[str]) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("a balancer needs at least one modality")
        unknown = sorted(set(config.weights) - set(modalities))
        if unknown:
            raise ValueError(
                f"BalancerConfig.weights names unknown modality {unknown[0]!r}; modalities are "
                f"{list(modalities)}"
            )
        self.config = config
        self.modalities = tuple(modalities)

    def initial_weight(self, m: str) -> float:
        return float(self.config.weights.get(m, 1.0))

    def weights(self) -> dict[str, float]:
        """The current weight of every modality."""
        return {m: self.initial_weight(m) for m in self.modalities}

    def combine(
        self,
        losses: Mapping[str, Tensor],
        shared_params: Sequence[Tensor] | None = None,
        *,
        log_grad_norms: bool = False,
    ) -> BalanceResult:
        """Combine per-modality scalar losses (any subset of the modalities) into one loss."""
        self._check(losses)
        weights = self.weights()
        total = sum(weights[m] * losses[m] for m in losses)
        return self._result(
            total, {m: weights[m] for m in losses}, losses, shared_params, log_grad_norms
        )

    def epoch_end(self, mean_losses: Mapping[str, float]) -> None:
        """Called every window of steps with the window's mean losses (DWA uses it)."""

    # helpers
    def _as_dict(self, values: Tensor) -> dict[str, float]:
        """``{modality: values[i]}`` in the order of :attr:`modalities`."""
        return {m: float(values[i]) for i, m in enumerate(self.modalities)}

    def _checked_shared(
        self, losses: Mapping[str, Tensor], shared_params: Sequence[Tensor] | None
    ) -> list[Tensor]:
        """Check ``losses``; the trainable shared parameters (required by gradient-based
        balancers)."""
        self._check(losses)
        if not shared_params:
            raise ValueError(
                f"the {self.name!r} balancer needs the shared parameters "
                "(model.shared_parameters())"
            )
        return [p for p in shared_params if p.requires_grad]

    def _check(self, losses: Mapping[str, Tensor]) -> None:
        if not losses:
            raise ValueError("combine() got no losses")
        unknown = sorted(set(losses) - set(self.modalities))
        if unknown:
            raise KeyError(
                f"loss for unknown modality {unknown[0]!r}; modalities are {list(self.modalities)}"
            )
        for m, loss in losses.items():
            if loss.dim() != 0:
                raise ValueError(f"losses[{m!r}] must be a scalar, got shape {tuple(loss.shape)}")

    def _result(
        self,
        total: Tensor,
        weights: dict[str, float],
        losses: Mapping[str, Tensor],
        shared_params: Sequence[Tensor] | None,
        log_grad_norms: bool,
        norms: dict[str, float] | None = None,
    ) -> BalanceResult:
        log = {f"balance/weight/{m}": w for m, w in weights.items()}
        if norms is None and log_grad_norms and shared_params:
            norms = grad_norms(losses, shared_params)
        if norms:
            log.update({f"balance/grad_norm/{m}": n for m, n in norms.items()})
            # share of the weighted gradients on the shared layer: what the step is made of
            weighted = {m: weights.get(m, 0.0) * n for m, n in norms.items()}
            norm_sum = sum(weighted.values())
            if norm_sum > 0:
                log.update({f"balance/grad_share/{m}": v / norm_sum for m, v in weighted.items()})
        return BalanceResult(total, weights, log)


class StaticBalancer(ModalityBalancer):
    """Fixed weights from the config (1 for modalities it does not name)."""

    name = "static"


class UncertaintyBalancer(ModalityBalancer):
    """Homoscedastic-uncertainty weighting (Kendall et al. 2018) with learned log-variances."""

    name = "uncertainty"

    def __init__(self, config: BalancerConfig, modalities: Sequence[str]) -> None:
        super().__init__(config, modalities)
        # Initialise so that exp(-s) equals the configured weight.
        init = torch.tensor([-math.log(max(self.initial_weight(m), 1e-8)) for m in self.modalities])
        self.log_vars = nn.Parameter(init)

    def weights(self) -> dict[str, float]:
        w = torch.exp(-self.log_vars.detach())
        return {m: float(w[i]) for i, m in enumerate(self.modalities)}

    def combine(self, losses, shared_params=None, *, log_grad_norms=False) -> BalanceResult:
        self._check(losses)
        index = {m: i for i, m in enumerate(self.modalities)}
        total = sum(
            0.5 * torch.exp(-self.log_vars[index[m]]) * losses[m] + 0.5 * self.log_vars[index[m]]
            for m in losses
        )
        weights = {m: w for m, w in self.weights().items() if m in losses}
        result = self._result(total, weights, losses, shared_params, log_grad_norms)
        result.log.update(
            {f"balance/log_var/{m}": float(self.log_vars[index[m]].detach()) for m in losses}
        )
        return result


class GradNormBalancer(ModalityBalancer):
    """GradNorm (Chen et al. 2018): learn weights that balance gradient norms on a shared layer.

    During :meth:`combine` the weights take one Adam step on the GradNorm objective
    ``sum_m |G_m - mean(G) * r_m ** alpha|`` (``G_m`` the norm of ``w_m * grad L_m`` on the shared
    layer, ``r_m`` the loss ratio ``L_m / L_m(0)`` relative to its mean), then are renormalised to
    sum to the number of modalities. The weights and the Adam moments are buffers, so they are
    checkpointed, and never touched by the generator's optimizer. In distributed runs the
    statistics and the weights' gradient are all-reduced, so every replica holds the same weights;
    every rank must call :meth:`combine` each step.
    """

    name = "gradnorm"

    def __init__(self, config: BalancerConfig, modalities: Sequence[str]) -> None:
        super().__init__(config, modalities)
        n = len(self.modalities)
        init = torch.tensor([self.initial_weight(m) for m in self.modalities])
        self.register_buffer("task_weights", init * n / init.sum().clamp_min(1e-8))
        self.register_buffer("initial_losses", torch.full((n,), float("nan")))
        self.register_buffer("adam_m", torch.zeros(n))
        self.register_buffer("adam_v", torch.zeros(n))
        self.register_buffer("adam_t", torch.zeros(()))

    def weights(self) -> dict[str, float]:
        return self._as_dict(self.task_weights)

    def combine(self, losses, shared_params=None, *, log_grad_norms=False) -> BalanceResult:
        params = self._checked_shared(losses, shared_params)
        n = len(self.modalities)
        dev = self.task_weights.device
        norms = torch.zeros(n, device=dev)  # ||grad L_m|| on the shared layer
        local = torch.zeros(n, device=dev)
        loss_sum = torch.zeros(n, device=dev)
        for i, m in enumerate(self.modalities):
            if m in losses and losses[m].requires_grad:
                grads = torch.autograd.grad(losses[m], params, retain_graph=True, allow_unused=True)
                norms[i] = torch.sqrt(
                    sum(g.float().pow(2).sum() for g in grads if g is not None) + 1e-12
                )
                local[i] = 1.0
                loss_sum[i] = losses[m].detach().float()
        stats = torch.cat([loss_sum, local])
        distributed.all_reduce_(stats)
        counts = stats[n:]
        seen = counts > 0
        mean_loss = stats[:n] / counts.clamp_min(1)
        with torch.no_grad():
            fresh = seen & torch.isnan(self.initial_losses)
            self.initial_losses[fresh] = mean_loss[fresh].clamp_min(1e-8)

        log: dict[str, float] = {}
        if bool(seen.any()):
            w = self.task_weights.clone().requires_grad_(True)
            weighted = w * norms  # G_m, differentiable in w only
            ratio = torch.where(
                seen, mean_loss / self.initial_losses.nan_to_num(1.0), torch.zeros_like(mean_loss)
            )
            rel = ratio / ratio[seen].mean().clamp_min(1e-8)
            mean_norm = (weighted.detach() * local).sum() / local.sum().clamp_min(1)
            target = mean_norm * rel.pow(self.config.gradnorm_alpha)
            gn_loss = ((weighted - target).abs() * local).sum()
            (grad_w,) = torch.autograd.grad(gn_loss, w)
            grad_w = grad_w.detach().clone()
            if distributed.is_distributed():
                grad_w = distributed.all_reduce_(grad_w) / distributed.world_size()
            self._adam_step(grad_w)
            log["balance/gradnorm_loss"] = float(gn_loss.detach())

        weights = {m: float(self.task_weights[self.modalities.index(m)]) for m in losses}
        total = sum(weights[m] * losses[m] for m in losses)
        norm_log = (
            {m: float(norms[self.modalities.index(m)]) for m in losses} if log_grad_norms else None
        )
        result = self._result(total, weights, losses, shared_params, log_grad_norms, norms=norm_log)
        result.log.update(log)
        return result

    @torch.no_grad()
    def _adam_step(
        self, grad: Tensor, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        self.adam_t += 1
        self.adam_m.mul_(beta1).add_(grad, alpha=1 - beta1)
        self.adam_v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        m_hat = self.adam_m / (1 - beta1 ** float(self.adam_t))
        v_hat = self.adam_v / (1 - beta2 ** float(self.adam_t))
        self.task_weights.sub_(self.config.gradnorm_lr * m_hat / (v_hat.sqrt() + eps))
        self.task_weights.clamp_(min=1e-3)
        self.task_weights.mul_(len(self.modalities) / self.task_weights.sum())


class DWABalancer(ModalityBalancer):
    """Dynamic Weight Average (Liu et al. 2019): weights from the rate of change of each loss.

    :meth:`epoch_end` must be called every window with the window's mean losses (identical on every
    rank: reduce them first); until two windows have passed the weights are the initial ones.
    """

    name = "dwa"

    def __init__(self, config: BalancerConfig, modalities: Sequence[str]) -> None:
        super().__init__(config, modalities)
        n = len(self.modalities)
        self.register_buffer("history", torch.full((2, n), float("nan")))
        self.register_buffer(
            "current", torch.tensor([self.initial_weight(m) for m in self.modalities])
        )

    def weights(self) -> dict[str, float]:
        return self._as_dict(self.current)

    def epoch_end(self, mean_losses: Mapping[str, float]) -> None:
        new = torch.tensor(
            [float(mean_losses.get(m, float("nan"))) for m in self.modalities],
            device=self.history.device,
        )
        prev = self.history[1].clone()
        self.history[0] = torch.where(torch.isnan(new), self.history[0], prev)
        self.history[1] = torch.where(torch.isnan(new), self.history[1], new)
        if bool(torch.isnan(self.history).any()):
            return
        rate = self.history[1] / self.history[0].clamp_min(1e-12)
        w = torch.softmax(rate / self.config.dwa_temperature, dim=0) * len(self.modalities)
        self.current.copy_(w)


def min_norm_weights(gram: Tensor, iters: int = 100) -> Tensor:
    """The point ``alpha`` of the probability simplex minimising ``alpha @ gram @ alpha``: the
    minimum-norm element of the convex hull of gradients whose Gram matrix is ``gram`` (Frank-Wolfe
    with exact line search, as in MGDA; exact for two gradients). Deterministic."""
    n = gram.shape[0]
    alpha = torch.full((n,), 1.0 / n, dtype=gram.dtype, device=gram.device)
    for _ in range(iters if n > 1 else 0):
        grad = gram @ alpha
        t = int(torch.argmin(grad))
        vv, vt, tt = alpha @ grad, grad[t], gram[t, t]
        denom = vv - 2 * vt + tt
        if float(denom) <= 1e-30:
            break
        gamma = float(((vv - vt) / denom).clamp(0.0, 1.0))
        if gamma <= 1e-12:
            break
        alpha = alpha * (1 - gamma)
        alpha[t] += gamma
    return alpha


class ParetoBalancer(ModalityBalancer):
    """Conflict-aware weights after MMPareto (Wei & Hu, ICML 2024), on the shared layer.

    Each step, every modality's gradient ``g_m`` on the shared parameters (times its configured
    weight) is all-reduced (averaged over processes, as DDP averages the step's gradient). If no
    two of them conflict (all inner products >= 0) the weights are the configured ones. Otherwise
    the direction is the minimum-norm point ``d = sum_m alpha_m g_m`` of their convex hull
    (:func:`min_norm_weights`), for which ``d . g_m >= |d|^2 >= 0`` for every ``m``: a step along
    ``-d`` increases no modality's loss to first order. Its magnitude is set to ``sum_m |g_m|``
    (MMPareto's enhanced magnitude), capped at ``pareto_max_weight`` times the configured weight
    (scaling, not clipping: the direction is kept). The weights are computed from all-reduced
    gradients, so they are identical on every rank; every rank must call :meth:`combine` each
    step. Its state (the last weights, the count of conflicting steps) is in buffers.
    """

    name = "pareto"

    def __init__(self, config: BalancerConfig, modalities: Sequence[str]) -> None:
        super().__init__(config, modalities)
        init = torch.tensor([self.initial_weight(m) for m in self.modalities])
        self.register_buffer("current", init)
        self.register_buffer("conflict_steps", torch.zeros(()))
        self.register_buffer("steps", torch.zeros(()))

    def weights(self) -> dict[str, float]:
        return self._as_dict(self.current)

    def combine(self, losses, shared_params=None, *, log_grad_norms=False) -> BalanceResult:
        grads = self._global_grads(losses, self._checked_shared(losses, shared_params))
        base = torch.tensor([self.initial_weight(m) for m in self.modalities], dtype=grads.dtype)
        g = grads * base.to(grads.device)[:, None]
        gram = (g @ g.T).cpu()
        norms = gram.diagonal().clamp_min(0).sqrt()
        active = norms > 0
        sub = gram[active][:, active]
        conflict = bool((sub < 0).any())
        with torch.no_grad():
            weights = base.clone()
            if conflict:
                alpha = min_norm_weights(sub)
                size = float((alpha @ sub @ alpha).clamp_min(0).sqrt())
                cap = self.config.pareto_max_weight / float(alpha.max())
                scale = min(float(norms[active].sum()) / max(size, 1e-30), cap)
                weights[active] = base[active] * alpha * scale
            self.current.copy_(weights.to(self.current))
            self.conflict_steps += float(conflict)
            self.steps += 1
        w = {m: float(weights[self.modalities.index(m)]) for m in losses}
        total = sum(w[m] * losses[m] for m in losses)
        raw = {
            m: float(norms[i] / base[i].clamp_min(1e-30))
            for i, m in enumerate(self.modalities)
            if m in losses
        }
        result = self._result(total, w, losses, shared_params, log_grad_norms, norms=raw)
        result.log["balance/conflict"] = float(conflict)
        return result

    def _global_grads(self, losses: Mapping[str, Tensor], params: list[Tensor]) -> Tensor:
        """``[M, P]`` float64: each modality's gradient on ``params``, averaged over processes
        (zeros where a process lacks the modality, as in DDP's average)."""
        dev = self.current.device
        size = sum(p.numel() for p in params)
        flat = torch.zeros(len(self.modalities), size, device=dev)
        for i, m in enumerate(self.modalities):
            if m in losses and losses[m].requires_grad:
                gs = torch.autograd.grad(losses[m], params, retain_graph=True, allow_unused=True)
                flat[i] = torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).detach().float().reshape(-1)
                        for g, p in zip(gs, params)
                    ]
                )
        distributed.all_reduce_(flat)
        return flat.double() / distributed.world_size()


BALANCERS: dict[str, type[ModalityBalancer]] = {
    cls.name: cls
    for cls in (StaticBalancer, UncertaintyBalancer, GradNormBalancer, DWABalancer, ParetoBalancer)
}


def build_balancer(config: BalancerConfig, modalities: Sequence[str]) -> ModalityBalancer:
    """The balancer named by ``config.name`` for these modalities."""
    return BALANCERS[config.name](config, modalities)
