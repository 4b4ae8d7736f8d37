"""The log-speedup reward (docs/method.md section 5).

Two references: AdamW at its defaults (the paper's): fit a power law to its validation curve,
invert it at the policy run's final loss, reward = clip(log(t_ref / T), -3, 3); or a small tuned
AdamW sweep (control/reference.py): reward = the clipped log of the speedup `lhopt evaluate`
reports, over the sweep's envelope (`envelope_log_speedup`)."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit

from lhopt_cli.results.speedup import NoFinishedBaseline, padded, speedup

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


# --- the reward against a tuned reference (a small AdamW sweep) ---------------------------------
SWEEP_REWARD_CLIP = (-3.0, 4.0)  # log speedup: a run 20x worse and one 55x faster are the ends


def envelope_log_speedup(steps, method_curve, reference_curves,
                         clip: tuple[float, float] = SWEEP_REWARD_CLIP) -> float:
    """log of the method's speedup over the envelope of `reference_curves`, clipped to `clip`.

    The speedup is the one `lhopt evaluate` reports (results/speedup.py: EMA, envelope, running
    minimum; T / t where the method reaches the envelope's final loss, else t_env(L_final) / T),
    so the reward measures the goal itself. `steps` (P,) are the validation steps, the curves
    (P,) each; a curve shorter than `steps` stopped (diverged) there. A run whose last loss is not
    finite gets the lowest reward, whatever it reached before (a run that blows up after touching
    the target has not finished training). Only speedups below 25x (the first of 25 validation
    points) can be resolved; the upper clip lies beyond, so a 10x win still earns more than 3x.
    A sweep whose every run ends diverged measures nothing: 0 (neutral).
    Raises ValueError if no reference curve has a finite value."""
    length = len(steps)
    method = padded(method_curve, length)
    references = [padded(c, length) for c in reference_curves]
    if not any(np.isfinite(r).any() for r in references):
        raise ValueError("the reference sweep has no finite validation loss")
    if not np.isfinite(method[-1]):
        return clip[0]
    try:
        value = speedup(steps, method, references)
    except NoFinishedBaseline:  # every reference run ended diverged: nothing to measure against
        return 0.0
    if value <= 0:
        return clip[0]
    return float(np.clip(math.log(value), clip[0], clip[1]))
