"""Per-run optimizer statistics for the controller (METHOD.md section 4), on [K, N] tensors.

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
