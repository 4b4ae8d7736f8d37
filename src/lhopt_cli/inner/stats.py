"""Per-run optimizer statistics for the controller (docs/method.md section 4), on [K, N] tensors.

Each statistic is a reduction over a member's flattened parameters; the interval's value is
the mean over the sampled steps. Features (unitless transforms) are built from these.
"""
from __future__ import annotations

import torch

STAT_NAMES = (
    "grad_norm", "param_norm", "update_norm", "momentum_norm", "momentum_minus_grad_norm",
    "cos_grad_momentum", "cos_grad_update", "cos_grad_param", "frac_sqrt_v_above_eps", "mean_log_abs_update",
)
_TINY = 1e-30


def _cos(a: torch.Tensor, b: torch.Tensor, a_norm: torch.Tensor, b_norm: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(1) / (a_norm * b_norm).clamp_min(_TINY)


@torch.no_grad()
def optimizer_stats(param: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v_hat_sqrt: torch.Tensor,
                    update: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Statistics per member (row). update is the step direction before the learning rate."""
    g_norm, p_norm, u_norm, m_norm = (t.norm(dim=1) for t in (grad, param, update, m))
    return {
        "grad_norm": g_norm,
        "param_norm": p_norm,
        "update_norm": u_norm,
        "momentum_norm": m_norm,
        "momentum_minus_grad_norm": (m - grad).norm(dim=1),
        "cos_grad_momentum": _cos(grad, m, g_norm, m_norm),
        "cos_grad_update": _cos(grad, update, g_norm, u_norm),
        "cos_grad_param": _cos(grad, param, g_norm, p_norm),
        "frac_sqrt_v_above_eps": (v_hat_sqrt > eps).float().mean(1),
        "mean_log_abs_update": update.abs().clamp_min(_TINY).log().mean(1),
    }


@torch.no_grad()
def adamw_stats(param: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, beta1, beta2, eps,
                step) -> dict[str, torch.Tensor]:
    """Statistics from AdamW's moments after the step (`step` counted after it), with torch's
    bias correction; the hyperparameters are floats or (K, 1) tensors."""
    bias1 = 1 - beta1**step
    bias2_sqrt = (1 - beta2**step) ** 0.5
    v_hat_sqrt = v.sqrt() / bias2_sqrt
    direction = (m / bias1) / (v_hat_sqrt + eps)
    eps_t = eps if torch.is_tensor(eps) else torch.tensor([[eps]])
    return optimizer_stats(param, grad, m, v_hat_sqrt, direction, eps_t)


@torch.no_grad()
def concatenated_adamw_stats(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor | None],
                             exp_avg_sqs: list[torch.Tensor | None], beta1: float, beta2: float, eps: float,
                             step: torch.Tensor | float) -> torch.Tensor:
    """adamw_stats of one run whose parameters are a list of tensors (a user's model): the moments
    AdamW is about to compute from `grads` and the moments before (`exp_avgs`, `exp_avg_sqs`; None
    before the first step: zeros), bias-corrected at `step` (the step count after this step; a
    tensor stays on its device). Returns a (len(STAT_NAMES),) float32 tensor on the parameters'
    device, in STAT_NAMES order, without moving anything to the host.

    The four lists are concatenated once (four copies) and every statistic is a whole-vector kernel
    on them, updated in place: about 20 passes and 30 kernel calls whatever the number of tensors
    (per-tensor foreach kernels cost one call per tensor and pass, the larger part of the time on a
    model of many small tensors). Sums run in another order than the engine's [K, N] rows: the
    values agree to float rounding (tests/test_api.py)."""
    g = torch.cat([t.detach().reshape(-1) for t in grads]).float()
    p = torch.cat([t.detach().reshape(-1) for t in params]).float()
    m = torch.cat([(t if t is not None else torch.zeros_like(x)).reshape(-1) for t, x in zip(exp_avgs, grads)]).float()
    v = torch.cat([(t if t is not None else torch.zeros_like(x)).reshape(-1) for t, x in zip(exp_avg_sqs, grads)]).float()
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    bias1 = 1 - beta1**step
    bias2_sqrt = (1 - beta2**step) ** 0.5
    v_hat_sqrt = v.sqrt_().div_(bias2_sqrt)
    count = g.numel()
    above_eps = torch.count_nonzero(v_hat_sqrt > eps).float() / count
    update = torch.div(m, v_hat_sqrt.add_(eps).mul_(bias1))  # (m / bias1) / (v_hat_sqrt + eps)
    g_norm, p_norm, u_norm, m_norm = (torch.linalg.vector_norm(t) for t in (g, p, update, m))  # no stacked copy
    cos_gm = torch.dot(g, m) / (g_norm * m_norm).clamp_min(_TINY)
    cos_gu = torch.dot(g, update) / (g_norm * u_norm).clamp_min(_TINY)
    cos_gp = torch.dot(g, p) / (g_norm * p_norm).clamp_min(_TINY)
    m_minus_g = torch.linalg.vector_norm(m.sub_(g))  # m is not needed any more: m - g in place
    mean_log = update.abs_().clamp_min_(_TINY).log_().sum() / count  # nor is the update
    values = [g_norm, p_norm, u_norm, m_norm, m_minus_g, cos_gm, cos_gu, cos_gp, above_eps, mean_log]
    return torch.stack([x.float() for x in values])
