"""The parametric fit L(N, D) = E + A / N^alpha + B / D^beta (Chinchilla approach 3).

Huber loss (delta 1e-3) on log L, with the model written as logsumexp(e, a - alpha log N,
b - beta log D); L-BFGS from the best points of a coarse grid (coarse to fine); every fit is
checked for convergence; intervals from a bootstrap over the data points.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import logsumexp

from lhopt_cli.scaling.frontier import FitError

HUBER_DELTA = 1e-3
NAMES = ("E", "A", "alpha", "B", "beta")
# Rows scored against the coarse grid at once: bounds the coarse step's memory (1,600 grid points x
# rows x 3 terms x 8 bytes, 10 MB per temporary here) whatever the input's size
COARSE_CHUNK_ROWS = 256
# The most points (per method) the fit takes: its time grows linearly with them (about 35 s for
# one fit of 100,000 points on one core, and `bootstrap` refits follow; scripts/bench/bench_scaling_fit.py)
MAX_ROWS = 100_000


def _huber(r: np.ndarray) -> np.ndarray:
    """The Huber loss of residuals r (delta HUBER_DELTA), elementwise."""
    size = np.abs(r)
    return np.where(size <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (size - 0.5 * HUBER_DELTA))


def objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray) -> tuple[float, np.ndarray]:
    """The Huber loss (delta 1e-3, summed over rows) of log L against
    logsumexp(e, a - alpha log N, b - beta log D), and its gradient in theta = (e, a, alpha, b, beta)
    (shape (5,)); log_n, log_d, log_l: shape (rows,). Chinchilla approach 3 (Hoffmann et al. 2022,
    appendix D.2); docs/method.md, "Scaling laws"."""
    e, a, alpha, b, beta = theta
    terms = np.stack([np.full_like(log_n, e), a - alpha * log_n, b - beta * log_d])  # (3, rows)
    pred = logsumexp(terms, axis=0)
    r = pred - log_l
    value = float(_huber(r).sum())
    slope = np.clip(r, -HUBER_DELTA, HUBER_DELTA)  # dHuber/dr
    weights = np.exp(terms - pred) * slope  # softmax weights of the three terms, times dHuber/dr
    grad = np.array([weights[0].sum(), weights[1].sum(), -(weights[1] * log_n).sum(),
                     weights[2].sum(), -(weights[2] * log_d).sum()])
    return value, grad


@dataclass
class ParametricFit:
    E: float
    A: float
    alpha: float
    B: float
    beta: float
    converged: bool
    objective: float

    def loss(self, n, d) -> np.ndarray:
        return self.E + self.A / np.asarray(n, float) ** self.alpha + self.B / np.asarray(d, float) ** self.beta

    def exponents(self) -> dict[str, float]:
        """Compute-optimal scaling N_opt ~ C^a, D_opt ~ C^b."""
        total = self.alpha + self.beta
        return {"a": self.beta / total, "b": self.alpha / total}


def too_many_rows(rows: int, method: str | None = None) -> str:
    """The one-line refusal of an input above MAX_ROWS points."""
    who = f"method '{method}' has" if method else "the input has"
    return (f"the parametric fit takes at most {MAX_ROWS:,} points per method and {who} {rows:,} (its time grows "
            f"with them: about 35 s per fit of 100,000); pass parametric=false or fewer points")


def _grid() -> np.ndarray:
    values = {"e": [-1.0, 0.0, 0.5, 1.0], "a": [0.0, 5.0, 10.0, 15.0, 20.0], "alpha": [0.1, 0.3, 0.6, 1.0],
              "b": [0.0, 5.0, 10.0, 15.0, 20.0], "beta": [0.1, 0.3, 0.6, 1.0]}
    return np.array(list(itertools.product(*values.values())))


def _coarse_scores(grid: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray) -> np.ndarray:
    """The objective at every grid point (shape (points,)), scored over chunks of rows."""
    e, a, alpha, b, beta = (column[:, None] for column in grid.T)
    scores = np.zeros(len(grid))
    for lo in range(0, len(log_n), COARSE_CHUNK_ROWS):
        n, d, l = log_n[lo:lo + COARSE_CHUNK_ROWS], log_d[lo:lo + COARSE_CHUNK_ROWS], log_l[lo:lo + COARSE_CHUNK_ROWS]
        pred = logsumexp(np.stack(np.broadcast_arrays(e, a - alpha * n, b - beta * d)), axis=0)  # (points, chunk)
        scores += _huber(pred - l).sum(1)
    return scores


def _minimize(start: np.ndarray, data: tuple) -> tuple[np.ndarray, float, bool]:
    def fun(x):
        return objective(x, *data)

    # the objective is small (a Huber loss on log L, ~1e-5 on good data): scipy's default ftol
    # (2.2e-9, absolute below 1) stops L-BFGS far from the optimum there
    result = minimize(fun, start, jac=True, method="L-BFGS-B",
                      options={"maxiter": 5000, "maxfun": 20000, "gtol": 1e-12, "ftol": 1e-15})
    # a line search that finds no decrease at a stationary point is converged too (L-BFGS-B then
    # reports ABNORMAL_TERMINATION_IN_LNSRCH, which says nothing about the fit)
    stationary = float(np.abs(result.jac).max()) < 1e-6
    return result.x, float(result.fun), bool(result.success) or stationary


def fit_parametric(params, tokens, loss, starts: int = 8, warm: ParametricFit | None = None) -> ParametricFit:
    """The fit from the `starts` best points of a coarse grid (and from `warm`, a fit to start
    from too, as bootstrap refits start from the main fit); the lowest objective wins, whatever
    the optimiser's own success flag says (`starts=0`: from `warm` alone). Raises FitError for
    fewer than 2 sizes of N or D, more than MAX_ROWS points, or no start at all."""
    n, d, l = (np.asarray(v, float) for v in (params, tokens, loss))
    if len(n) > MAX_ROWS:
        raise FitError(too_many_rows(len(n)))
    if len(np.unique(n)) < 2 or len(np.unique(d)) < 2:
        raise FitError("the parametric fit needs at least 2 model sizes and 2 data sizes")
    data = tuple(np.log(v) for v in (n, d, l))
    begin = []
    if starts > 0:
        grid = _grid()
        scores = _coarse_scores(grid, *data)  # coarse: every grid point, in chunks of rows
        begin = [grid[index] for index in np.argsort(scores, kind="stable")[:starts]]  # fine: L-BFGS from the best few
    best = None
    if warm is None and not begin:
        raise FitError("the parametric fit needs a start: starts > 0 or a warm fit")
    if warm is not None:
        begin.append(np.array([np.log(warm.E), np.log(warm.A), warm.alpha, np.log(warm.B), warm.beta]))
    for start in begin:
        x, value, ok = _minimize(start, data)
        if best is None or value < best[1]:
            best = (x, value, ok)
    x, value, ok = best
    with np.errstate(over="ignore"):  # a refit that ran off to a huge coefficient: inf, dropped by the bootstrap
        e, a, b = (float(np.exp(x[k])) for k in (0, 1, 3))
    return ParametricFit(e, a, float(x[2]), b, float(x[4]), ok and all(np.isfinite([e, a, b])), value)


def bootstrap_parametric(params, tokens, loss, fit: ParametricFit, draws: int, seed: int = 0, tick=None) -> np.ndarray:
    """`draws` refits on resamples of the points (rows drawn with replacement), each from the
    main fit's optimum: shape (refits with finite values, 7), the columns E, A, alpha, B, beta, a, b.
    Each refit starts from `fit` only: over 50 synthetic laws (scripts/bench/interval_coverage.py) 200
    such refits give percentile intervals that hold the truth 92-96% of the time, where 20 refits
    from the coarse grid's best points held it 84-92%."""
    from lhopt_cli.scaling.frontier import bootstrap

    table = pd.DataFrame({"params": np.asarray(params, float), "tokens": np.asarray(tokens, float),
                          "loss": np.asarray(loss, float)})

    def refit(sample):
        again = fit_parametric(sample["g"].params, sample["g"].tokens, sample["g"].loss, starts=0, warm=fit)
        return [getattr(again, name) for name in NAMES] + list(again.exponents().values())

    draws_made = bootstrap(refit, {"g": table}, draws, seed=seed, tick=tick)
    return draws_made[np.isfinite(draws_made).all(axis=1)] if draws_made.size else draws_made
