"""Unitless features of a run (docs/method.md section 4), as a named dict in a fixed order.

The policy never sees a raw loss, norm or hyperparameter value: only log-ratios (squashed by
tanh where they are near 1), cosines, fractions, and percentiles of a value within its own
history in this run (the history CDF, at 5 recency strengths). Multiplying the loss by a
constant or rescaling the weights leaves all of them unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from lhopt_cli.inner.optim import HParams
from lhopt_cli.control.actions import HEAD_NAMES, NVEC, REGISTERS, logit

CDF_STRENGTHS = (1.25, 2.5, 5.0, 10.0, 20.0)  # weight of the newest over the oldest history value
CDF_OF = ("train_loss", "valid_loss", "grad_norm", "rel_update", "noise_scale")
_TINY = 1e-30


def history_cdfs(history: list[float], value: float, strengths=CDF_STRENGTHS) -> list[float]:
    """Weighted percentiles of `value` within `history`, one per recency strength (the newest
    value weighs `strength` times the oldest)."""
    if not history or not math.isfinite(value):
        return [0.5] * len(strengths)
    h = np.asarray(history, dtype=float)
    w = np.asarray(strengths, dtype=float)[:, None] ** np.linspace(0.0, 1.0, len(h))[None, :]  # (S, n)
    score = (h < value) + 0.5 * (h == value)
    return list((w @ score) / w.sum(axis=1))


def history_cdf(history: list[float], value: float, strength: float) -> float:
    return history_cdfs(history, value, (strength,))[0]


def _log_ratio(a: float, b: float) -> float:
    """log(a / b); NaN where either was not measured (NaN) or is not a positive number."""
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0 or b <= 0:
        return math.nan
    return math.log(max(a, _TINY) / max(b, _TINY))


def _moved(now: float, start: float) -> float:
    """log(now / start): how far relative actions moved a hyperparameter; 0 for one that started
    at zero (a user's weight decay 0: relative actions keep it there)."""
    if start == 0 or now == 0:
        return 0.0
    return math.log(now / start)


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def feature_names() -> list[str]:
    # log(|param| / |update|) of the paper is -log_rel_update once the update includes the lr
    # (without it, it carries the parameters' unit), so it is not repeated here
    names = ["progress", "clip_frac", "log_rel_update", "noise_scale", "noise_vs_grad",
             "cos_grad_momentum", "cos_grad_update", "cos_grad_param", "cdf_cos_grad_momentum",
             "cdf_cos_grad_update", "cdf_cos_grad_param", "frac_sqrt_v_above_eps", "mean_log_update",
             "tanh_log_valid_over_train", "tanh_log_train_change", "loss_is_nan", "loss_is_inf",
             "log_lr_rel", "log_one_minus_beta1_rel", "log_one_minus_beta2_rel", "log_eps_rel", "log_wd_rel",
             "clip_logit_rel"]
    names += [f"cdf_{name}_{s:g}" for name in CDF_OF for s in CDF_STRENGTHS]
    names += [f"prev_{head}_{k}" for head, n in zip(HEAD_NAMES, NVEC) for k in range(n)]
    names += [f"register{r}_{part}" for r in range(REGISTERS) for part in ("filled", "tanh_log_loss_rel", "progress")]
    return names


FEATURE_NAMES = tuple(feature_names())


@dataclass
class Register:
    state: dict
    loss: float
    progress: float


@dataclass
class FeatureTracker:
    """One run's feature state: histories, the previous decision's loss and action, registers."""

    start: HParams
    num_params: int
    history: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in CDF_OF})
    last_train: float = math.nan
    prev_action: tuple[int, ...] | None = None
    registers: list[Register | None] = field(default_factory=lambda: [None] * REGISTERS)

    def features(self, progress: float, stats: dict[str, float], count: int, train_loss: float | None,
                 valid_loss: float, hp: HParams, valid_is_new: bool = True) -> dict[str, float]:
        """Features for one decision; `stats` are sums over `count` sampled steps of the interval,
        `train_loss` the interval's mean training loss (NaN: diverged; None: no step was taken),
        `valid_loss` the latest validation loss (`valid_is_new`: measured in this interval).

        A value that was not measured (count 0, no loss, a first decision without a previous
        one) is shown as the feature's neutral value (0; 0.5 for a percentile) and never enters
        a history, so it cannot make the next real value look extreme."""
        measured_loss = train_loss is not None
        train_loss = math.nan if train_loss is None else train_loss
        s = {k: v / count for k, v in stats.items()} if count else {}
        g, p, u, m = (s.get(k, math.nan) for k in ("grad_norm", "param_norm", "update_norm", "momentum_norm"))
        rel_update = _log_ratio(hp.lr * u, p)
        noise = _log_ratio(m, s.get("momentum_minus_grad_norm", math.nan))
        root_n = math.sqrt(max(self.num_params, 1))
        f = {
            "progress": progress,
            "clip_frac": s.get("clipped", 0.0),
            "log_rel_update": rel_update,
            "noise_scale": noise,
            "noise_vs_grad": _log_ratio(m, g),
        }
        for name in ("cos_grad_momentum", "cos_grad_update", "cos_grad_param"):
            cos = s.get(name, 0.0)
            cos = cos if math.isfinite(cos) else 0.0
            f[name] = cos
            f[f"cdf_{name}"] = _normal_cdf(cos * root_n)
        f["frac_sqrt_v_above_eps"] = s.get("frac_sqrt_v_above_eps", 0.0)
        f["mean_log_update"] = s.get("mean_log_abs_update", 0.0) / 10.0  # a log of a unitless direction
        f["tanh_log_valid_over_train"] = math.tanh(_log_ratio(valid_loss, train_loss))
        f["tanh_log_train_change"] = math.tanh(_log_ratio(train_loss, self.last_train))
        f["loss_is_nan"] = float(measured_loss and math.isnan(train_loss))
        f["loss_is_inf"] = float(math.isinf(train_loss))
        f.update(self._hparams_relative(hp))
        current = {"train_loss": train_loss, "valid_loss": valid_loss, "grad_norm": g, "rel_update": rel_update,
                   "noise_scale": noise}
        for name in CDF_OF:
            for strength, cdf in zip(CDF_STRENGTHS, history_cdfs(self.history[name], current[name])):
                f[f"cdf_{name}_{strength:g}"] = float(cdf)
            if math.isfinite(current[name]) and (name != "valid_loss" or valid_is_new):
                self.history[name].append(current[name])
        for head, n, k in zip(HEAD_NAMES, NVEC, self.prev_action or (None,) * len(NVEC)):
            for j in range(n):
                f[f"prev_{head}_{j}"] = float(k == j)
        for r, reg in enumerate(self.registers):
            f[f"register{r}_filled"] = float(reg is not None)
            f[f"register{r}_tanh_log_loss_rel"] = math.tanh(_log_ratio(reg.loss, train_loss)) if reg else 0.0
            f[f"register{r}_progress"] = reg.progress if reg else 0.0
        if math.isfinite(train_loss):
            self.last_train = train_loss
        return {k: (f[k] if math.isfinite(f[k]) else 0.0) for k in FEATURE_NAMES}

    def _hparams_relative(self, hp: HParams) -> dict[str, float]:
        s = self.start
        return {
            "log_lr_rel": _moved(hp.lr, s.lr),
            "log_one_minus_beta1_rel": _moved(1 - hp.beta1, 1 - s.beta1),
            "log_one_minus_beta2_rel": _moved(1 - hp.beta2, 1 - s.beta2),
            "log_eps_rel": _moved(hp.eps, s.eps),
            "log_wd_rel": _moved(hp.weight_decay, s.weight_decay),
            "clip_logit_rel": logit(hp.clip) - logit(s.clip),
        }


def to_vector(features: dict[str, float]) -> np.ndarray:
    return np.array([features[name] for name in FEATURE_NAMES], dtype=np.float32)


_FILLED = [FEATURE_NAMES.index(f"register{r}_filled") for r in range(REGISTERS)]
_RESTART_OFFSET = sum(NVEC[: HEAD_NAMES.index("restart")])  # where the restart head's logits start


def feasible_actions(obs: torch.Tensor) -> torch.Tensor:
    """(B, sum(NVEC)) bool from raw observations (B, len(FEATURE_NAMES)): every choice is
    feasible except a load from a register that holds nothing (it could not act)."""
    feasible = torch.ones(obs.shape[0], sum(NVEC), dtype=torch.bool, device=obs.device)
    load0 = _RESTART_OFFSET + 1 + REGISTERS  # restart choices: none, save 0..R-1, load 0..R-1
    feasible[:, load0 : load0 + REGISTERS] = obs[:, _FILLED] > 0.5
    return feasible


def no_restart_mask(batch: int) -> torch.Tensor:
    """(batch, sum(NVEC)) bool that allows only 'none' on the restart head (a run without a
    model to save, as a Controller attached without `model`)."""
    mask = torch.ones(batch, sum(NVEC), dtype=torch.bool)
    mask[:, _RESTART_OFFSET + 1 : _RESTART_OFFSET + NVEC[HEAD_NAMES.index("restart")]] = False
    return mask
