"""The log-speedup reward (METHOD.md section 5): fit a power law to the reference AdamW run's
validation curve, invert it at the policy run's final loss, reward = clip(log(t_ref / T), -3, 3)."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit

EXTRAPOLATION = 2.0  # t_ref may reach at most 2x the reference run's length
REWARD_CLIP = 3.0


def power_law(t, e, a, alpha, t0):
    return e + a * (t + t0) ** (-alpha)


@dataclass(frozen=True)
class PowerLawFit:
    e: float
    a: float
    alpha: float
    t0: float
    total_steps: int
    extrapolation: float = EXTRAPOLATION

    def loss_at(self, t: float) -> float:
        return float(power_law(t, self.e, self.a, self.alpha, self.t0))

    def steps_to(self, loss: float) -> float:
        """Steps the reference would need to reach `loss`, within [1, extrapolation x T]."""
        cap = self.extrapolation * self.total_steps
        if not math.isfinite(loss):
            return 1.0
        if loss <= self.e:
            return cap
        # in logs: a loss just above E asks for astronomically many steps (a float overflow)
        log_t = (math.log(self.a) - math.log(loss - self.e)) / self.alpha
        if log_t >= math.log(cap + self.t0):
            return cap
        return float(min(max(math.exp(log_t) - self.t0, 1.0), cap))


def fit_reference(steps, losses, total_steps: int, extrapolation: float = EXTRAPOLATION) -> PowerLawFit:
    """Fit L(t) = E + A (t + t0)^-alpha to the reference's curve (the init loss included);
    inverting it may extrapolate up to `extrapolation` times the run's length."""
    t = np.asarray(steps, dtype=float)
    y = np.asarray(losses, dtype=float)
    keep = np.isfinite(y)
    t, y = t[keep], y[keep]
    if len(t) < 4:
        raise ValueError("the reference curve needs at least 4 finite points to fit a power law")
    low = float(y.min())
    e0 = 0.5 * low if low > 0 else low - abs(low) - 1.0
    t00 = max(1.0, total_steps / 10.0)
    a0 = max(float(y[0] - e0), 1e-6) * t00**0.5
    lower = [-np.inf if low <= 0 else 0.0, 1e-12, 1e-3, 1e-3]
    upper = [low - 1e-9 * max(abs(low), 1.0), np.inf, 10.0, 100.0 * total_steps]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params, _ = curve_fit(power_law, t, y, p0=[e0, a0, 0.5, t00], bounds=(lower, upper), maxfev=20000)
    return PowerLawFit(*map(float, params), total_steps=int(total_steps), extrapolation=float(extrapolation))


def log_speedup_reward(fit: PowerLawFit, final_loss: float, steps: int) -> float:
    """clip(log(t_ref / T), -3, 3) for a run of `steps` steps ending at `final_loss`."""
    if not math.isfinite(final_loss):
        return -REWARD_CLIP
    return float(np.clip(math.log(fit.steps_to(final_loss) / steps), -REWARD_CLIP, REWARD_CLIP))
