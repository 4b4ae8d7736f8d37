"""Speedup of a method over the best of the baselines (docs/method.md section 8).

Every validation curve is EMA-smoothed; the baseline envelope is the minimum over baselines at
each step followed by a running minimum; L* is the envelope's final value. A method that
reaches L* at step t has speedup T / t; one that never does has t_env(L_final) / T < 1, where
t_env is the first step at which the envelope reached the method's final loss. Crossing steps
are interpolated linearly between evaluation points.
"""
from __future__ import annotations

import numpy as np

EMA_DECAY = 0.5  # weight of the previous smoothed value; the curves have ~25 points


def padded(values, length: int) -> np.ndarray:
    """A curve on `length` evaluation points; one that stopped early (diverged) counts as
    infinitely bad from there on."""
    values = np.asarray(values, dtype=float)[:length]
    return np.pad(values, (0, length - len(values)), constant_values=np.inf)


def ema(values, decay: float = EMA_DECAY) -> np.ndarray:
    out = np.empty(len(values))
    acc = None
    for i, value in enumerate(np.asarray(values, dtype=float)):
        value = np.inf if not np.isfinite(value) else value
        acc = value if acc is None or not np.isfinite(acc) else decay * acc + (1 - decay) * value
        out[i] = acc
    return out


def envelope(curves) -> np.ndarray:
    """Running minimum of the pointwise minimum of (already smoothed) curves on shared steps."""
    stacked = np.vstack([np.where(np.isfinite(c), c, np.inf) for c in curves])
    return np.minimum.accumulate(stacked.min(axis=0))


def first_step_reaching(steps, curve, level: float) -> float | None:
    """The first (interpolated) step at which `curve` is at or below `level`; None if never."""
    steps, curve = np.asarray(steps, dtype=float), np.asarray(curve, dtype=float)
    hits = np.flatnonzero(curve <= level)
    if len(hits) == 0:
        return None
    i = int(hits[0])
    if i == 0 or not np.isfinite(curve[i - 1]):
        return float(steps[i])
    frac = (curve[i - 1] - level) / (curve[i - 1] - curve[i])
    return float(steps[i - 1] + frac * (steps[i] - steps[i - 1]))


def best_curve(curves: dict, steps):
    """The baseline run the tables call best: of the curves ({run id: rows with valid_loss})
    complete on `steps`, the one of lowest smoothed final loss (the first curve if none is)."""
    finals = {rid: ema(c.valid_loss.to_numpy(float))[-1] for rid, c in curves.items() if len(c) == len(steps)}
    return curves[min(finals, key=finals.get) if finals else next(iter(curves))]


class NoFinishedBaseline(ValueError):
    """Every baseline curve ends non-finite: there is nothing to measure a speedup against."""


def speedup(steps, method_curve, baseline_curves, decay: float = EMA_DECAY) -> float:
    """The method's speedup over the envelope of the baselines (all on the same steps, (P,)).

    A method whose curve ends diverged (its last value NaN/inf) scores 0 whatever it reached on
    the way: it did not finish training. Raises NoFinishedBaseline when no baseline curve ends
    finite (docs/method.md section 8 needs the envelope's final loss)."""
    steps = np.asarray(steps, dtype=float)
    total = float(steps[-1])
    if not any(np.isfinite(np.asarray(c, dtype=float)[-1]) for c in baseline_curves):
        raise NoFinishedBaseline("the baseline grid has no run that finished (every one diverged): "
                                 "there is nothing to compare against")
    raw = np.asarray(method_curve, dtype=float)
    if len(raw) == 0 or not np.isfinite(raw[-1]):
        return 0.0
    env = envelope([ema(c, decay) for c in baseline_curves])
    method = ema(method_curve, decay)
    target = env[-1]
    reached = first_step_reaching(steps, method, target)
    if reached is not None and reached > 0:
        return total / reached
    final = method[-1]
    if not np.isfinite(final):
        return 0.0
    t_env = first_step_reaching(steps, env, final)
    return (t_env if t_env is not None else total) / total


def best_single_run(steps, runs: dict, baseline_curves, decay: float = EMA_DECAY) -> tuple[float, object]:
    """The oracle: of `runs` ({key: curve on `steps`}), the one with the highest speedup over the
    envelope of `baseline_curves`, chosen in hindsight. Returns (speedup, its key); raises
    NoFinishedBaseline as `speedup` does, ValueError for no runs."""
    if not runs:
        raise ValueError("no runs to choose from")
    scored = [(speedup(steps, curve, baseline_curves, decay), i) for i, curve in enumerate(runs.values())]
    value, index = max(scored)
    return value, list(runs)[index]
