"""Compute-efficient frontier per method and the fits L(C) = (C_c / C)^alpha [+ E], with speedups.

All fits are least squares on log L. Intervals are bootstrap percentiles over the frontier points.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit


class FitError(ValueError):
    pass


def frontier(points: pd.DataFrame) -> pd.DataFrame:
    """Points (compute, loss, params) that no point with less compute beats: the lower envelope."""
    ordered = points.sort_values("compute")
    best = np.minimum.accumulate(ordered.loss.to_numpy())
    keep = ordered.loss.to_numpy() <= best  # a new running minimum
    keep &= np.r_[True, best[1:] < best[:-1]]
    return ordered[keep]


@dataclass
class PowerFit:
    alpha: float
    log_cc: float  # log C_c
    e: float = 0.0

    def loss(self, compute) -> np.ndarray:
        return self.e + np.exp(self.alpha * (self.log_cc - np.log(compute)))

    def compute_for(self, loss) -> np.ndarray:
        """The compute at which the fit reaches `loss` (inf at or below E)."""
        loss = np.asarray(loss, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(loss > self.e, np.exp(self.log_cc - np.log(loss - self.e) / self.alpha), np.inf)


def fit_power(compute, loss) -> PowerFit:
    """L = (C_c / C)^alpha: a line in log-log space."""
    x, y = np.log(np.asarray(compute, float)), np.log(np.asarray(loss, float))
    slope, intercept = np.polyfit(x, y, 1)
    alpha = -slope
    if alpha <= 0:
        raise FitError("the frontier's loss does not fall with compute: no power law to fit")
    return PowerFit(alpha, intercept / alpha)


def fit_power_offset(compute, loss) -> PowerFit:
    """L = E + (C_c / C)^alpha, least squares on log L, started from the plain power law."""
    c, y = np.asarray(compute, float), np.asarray(loss, float)
    start = fit_power(c, y)

    def model(log_c, e, log_cc, alpha):
        return np.log(e + np.exp(alpha * (log_cc - log_c)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params, _ = curve_fit(model, np.log(c), np.log(y), p0=[0.5 * y.min(), start.log_cc, start.alpha],
                              bounds=([0.0, -np.inf, 1e-4], [y.min() * (1 - 1e-9), np.inf, 10.0]), maxfev=20000)
    return PowerFit(alpha=float(params[2]), log_cc=float(params[1]), e=float(params[0]))


def fit_shared_exponent(frontiers: dict[str, pd.DataFrame]) -> tuple[float, dict[str, float]]:
    """One alpha for all methods, one log C_c each: log L = alpha (log C_c,m - log C)."""
    names = list(frontiers)
    rows, targets = [], []
    for k, name in enumerate(names):
        f = frontiers[name]
        for c, l in zip(f.compute, f.loss):
            rows.append([-np.log(c)] + [1.0 if j == k else 0.0 for j in range(len(names))])
            targets.append(np.log(l))
    solution, *_ = np.linalg.lstsq(np.array(rows), np.array(targets), rcond=None)
    alpha = float(solution[0])
    if alpha <= 0:
        raise FitError("the frontiers' loss does not fall with compute: no shared power law to fit")
    return alpha, {name: float(solution[1 + k] / alpha) for k, name in enumerate(names)}


def constant_speedup(frontiers: dict[str, pd.DataFrame], base: str, method: str) -> float:
    """C_base / C_method at equal loss under a shared exponent: the ratio of their C_c."""
    _, log_cc = fit_shared_exponent({base: frontiers[base], method: frontiers[method]})
    return float(np.exp(log_cc[base] - log_cc[method]))


def slope_aware_speedup(base_fit: PowerFit, method_fit: PowerFit, target_compute: float) -> float:
    """Compute the base needs to reach the loss the method's fit reaches at `target_compute`."""
    loss = method_fit.loss(target_compute)
    return float(base_fit.compute_for(loss) / target_compute)


def bootstrap(fn, frames: dict[str, pd.DataFrame], draws: int, seed: int = 0, tick=None) -> np.ndarray:
    """fn(resampled frames) for `draws` resamples of each frame's rows; failed refits are skipped.
    `tick()`, if given, is called after each draw (a progress bar)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        if tick is not None:
            tick()
        sample = {k: f.iloc[rng.integers(0, len(f), len(f))] for k, f in frames.items()}
        try:
            values.append(fn(sample))
        except (FitError, RuntimeError, ValueError, np.linalg.LinAlgError):
            continue
    return np.array(values, dtype=float)


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))
