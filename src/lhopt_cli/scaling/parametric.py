"""The parametric fit L(N, D) = E + A / N^alpha + B / D^beta (Chinchilla approach 3).

Huber loss (delta 1e-3) on log L, with the model written as logsumexp(e, a - alpha log N,
b - beta log D); L-BFGS from the best points of a coarse grid (coarse to fine); every fit is
checked for convergence; intervals from a bootstrap over the data points.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize

from .frontier import FitError

HUBER_DELTA = 1e-3
NAMES = ("E", "A", "alpha", "B", "beta")


def _objective(theta: torch.Tensor, log_n: torch.Tensor, log_d: torch.Tensor, log_l: torch.Tensor) -> torch.Tensor:
    e, a, alpha, b, beta = theta.unbind(-1)
    pred = torch.logsumexp(torch.stack([e.expand_as(log_n), a - alpha * log_n, b - beta * log_d]), dim=0)
    return torch.nn.functional.huber_loss(pred, log_l, delta=HUBER_DELTA, reduction="sum")


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


def _grid() -> np.ndarray:
    values = {"e": [-1.0, 0.0, 0.5, 1.0], "a": [0.0, 5.0, 10.0, 15.0, 20.0], "alpha": [0.1, 0.3, 0.6, 1.0],
              "b": [0.0, 5.0, 10.0, 15.0, 20.0], "beta": [0.1, 0.3, 0.6, 1.0]}
    return np.array(list(itertools.product(*values.values())))


def _minimize(start: np.ndarray, data: tuple) -> tuple[np.ndarray, float, bool]:
    def fun(x):
        theta = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        value = _objective(theta, *data)
        value.backward()
        return float(value.detach()), theta.grad.numpy().copy()

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
    the optimiser's own success flag says. Raises FitError for fewer than 2 sizes of N or D."""
    n, d, l = (np.asarray(v, float) for v in (params, tokens, loss))
    if len(np.unique(n)) < 2 or len(np.unique(d)) < 2:
        raise FitError("the parametric fit needs at least 2 model sizes and 2 data sizes")
    data = tuple(torch.tensor(np.log(v), dtype=torch.float64) for v in (n, d, l))
    grid = torch.tensor(_grid(), dtype=torch.float64)
    with torch.no_grad():  # coarse: score every grid point at once
        e, a, alpha, b, beta = grid.T[:, :, None]
        pred = torch.logsumexp(torch.stack([e.expand(-1, len(n)), a - alpha * data[0], b - beta * data[1]]), 0)
        scores = torch.nn.functional.huber_loss(pred, data[2].expand_as(pred), delta=HUBER_DELTA,
                                                reduction="none").sum(1)
    best = None
    begin = [grid[index].numpy() for index in torch.argsort(scores)[:starts]]  # fine: L-BFGS from the best few
    if warm is not None:
        begin.append(np.array([np.log(warm.E), np.log(warm.A), warm.alpha, np.log(warm.B), warm.beta]))
    for start in begin:
        x, value, ok = _minimize(start, data)
        if best is None or value < best[1]:
            best = (x, value, ok)
    x, value, ok = best
    return ParametricFit(float(np.exp(x[0])), float(np.exp(x[1])), float(x[2]), float(np.exp(x[3])),
                         float(x[4]), ok, value)
