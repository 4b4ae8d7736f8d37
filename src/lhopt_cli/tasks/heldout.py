"""Kinds held out of every training family and of the test suite: the leave-kinds-out validation
suite (conf/suite/validation_heldout.yaml) is drawn from them, so a checkpoint is chosen by how it
does on kinds of task it never trained on, as the test suite measures it.

friedman_regression: an MLP fits Friedman's (1991) nonlinear function of 5 of `features` inputs
(scikit-learn's `make_friedman1`, generated), mean squared error on a standardised target.
lorenz_forecast: an MLP forecasts the next `horizon` states (x, y, z) of a Lorenz-63 trajectory
(integrated here with RK4) from the last `window`; the trajectory's first 80% trains, its last 20%
validates. mnist1d_transformer: a transformer classifier reads mnist1d's 40-sample signals as 8
tokens of 5 samples; the signals come from mnist1d's own generator (seed 42), as mnist1d_conv's
do, so this kind holds out the architecture, not the data source (mnist1d draws num_samples // 10
per class, so the validation split can be a few examples short of `num_valid`).
mnist1d_lstm: an LSTM reads the same signals one sample per step (a sequence of 40) and classifies
from its last step: a recurrent network on a long sequence.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lhopt_cli.tasks.base import ArrayClassificationTask, ArrayRegressionTask
from lhopt_cli.tasks.data import mnist1d
from lhopt_cli.tasks.algorithmic import RecurrentNet
from lhopt_cli.tasks.vision import RowTransformer, mlp


class FriedmanRegression(ArrayRegressionTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        from sklearn.datasets import make_friedman1

        c = self.cfg
        n_train, n_valid = int(c.num_train), int(c.num_valid)
        x, y = make_friedman1(n_train + n_valid, n_features=int(c.features), noise=float(c.noise),
                              random_state=int(c.data_seed))
        mean, std = y[:n_train].mean(), y[:n_train].std()
        x = torch.from_numpy(((x - 0.5) * np.sqrt(12.0)).astype(np.float32))  # U(0, 1) inputs to unit variance
        y = torch.from_numpy(((y - mean) / std).astype(np.float32))[:, None]
        self.x_train, self.y_train, self.x_valid, self.y_valid = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
        self._limit_valid()

    def build_model(self) -> nn.Module:
        return mlp(self.x_train.shape[1], self.cfg.hidden, 1, self.cfg.activation, self.cfg.norm)


def lorenz_trajectory(points: int, every: int, seed: int, dt: float = 0.01) -> np.ndarray:
    """(points, 3) states of the Lorenz-63 system (sigma 10, rho 28, beta 8/3), one every `every`
    RK4 steps of `dt`, after a burn-in of 1,000 steps from a seeded start."""
    def slope(s: np.ndarray) -> np.ndarray:
        x, y, z = s
        return np.array([10.0 * (y - x), x * (28.0 - z) - y, x * y - 8.0 / 3.0 * z])

    state = np.random.default_rng(seed).normal(0.0, 1.0, 3) + np.array([1.0, 1.0, 20.0])
    out = np.empty((points, 3))
    for k in range(1000 + points * every):
        k1 = slope(state)
        k2 = slope(state + 0.5 * dt * k1)
        k3 = slope(state + 0.5 * dt * k2)
        k4 = slope(state + dt * k3)
        state = state + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        if k >= 1000 and (k - 1000) % every == 0:
            out[(k - 1000) // every] = state
    return out


def lorenz_window_counts(points: int, window: int, horizon: int) -> tuple[int, int]:
    """(training, validation) windows of `window` + `horizon` states in a trajectory of `points`:
    the training ones end by the cut at 80%, the validation ones start after it."""
    cut = int(0.8 * points)
    return cut - window - horizon + 1, points - cut - window - horizon + 1


class LorenzForecast(ArrayRegressionTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        c = self.cfg
        window, horizon = int(c.window), int(c.horizon)
        series = lorenz_trajectory(int(c.points), int(c.every), int(c.data_seed))
        cut = int(0.8 * len(series))
        series = (series - series[:cut].mean(0)) / series[:cut].std(0)  # the training part's scale
        series = torch.from_numpy(series.astype(np.float32))
        span = window + horizon
        starts = torch.arange(len(series) - span + 1)
        pieces = series[starts[:, None] + torch.arange(span)]  # (N, span, 3)
        n_train, n_valid = lorenz_window_counts(len(series), window, horizon)
        train, valid = pieces[:n_train], pieces[len(pieces) - n_valid:]
        self.x_train, self.y_train = train[:, :window].flatten(1), train[:, window:].flatten(1)
        self.x_valid, self.y_valid = valid[:, :window].flatten(1), valid[:, window:].flatten(1)
        self._limit_valid()

    def build_model(self) -> nn.Module:
        return mlp(self.x_train.shape[1], self.cfg.hidden, self.y_train.shape[1], self.cfg.activation)


class Mnist1dTransformer(ArrayClassificationTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        num_train, num_valid = int(self.cfg.num_train), int(self.cfg.num_valid)
        data = mnist1d(num_train + num_valid)
        x = torch.from_numpy(data["x"]).view(-1, 8, 5)  # 40 samples as 8 tokens of 5
        y = torch.from_numpy(data["y"])
        self.x_train, self.y_train = x[:num_train], y[:num_train]
        self.x_valid, self.y_valid = x[num_train:], y[num_train:]
        self._limit_valid()

    def build_model(self) -> nn.Module:
        c = self.cfg
        heads = int(c.n_head)
        width = heads * -(-int(c.d_model) // heads)  # d_model rounded up to a multiple of the heads
        return RowTransformer(8, 5, width, heads, int(c.n_layer), 10)


class LastStepClassifier(nn.Module):
    """A recurrent net (nn.Linear cells: the batched engine vmaps them) over a signal, one sample
    per step; its last step's output are the class logits."""

    def __init__(self, cell: str, hidden: int, classes: int):
        super().__init__()
        self.rnn = RecurrentNet(cell, 1, hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, classes)
        return self.rnn(x.unsqueeze(-1))[:, -1]


class Mnist1dLstm(ArrayClassificationTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        num_train, num_valid = int(self.cfg.num_train), int(self.cfg.num_valid)
        data = mnist1d(num_train + num_valid)
        x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])  # (N, 40) signals
        self.x_train, self.y_train = x[:num_train], y[:num_train]
        self.x_valid, self.y_valid = x[num_train:], y[num_train:]
        self._limit_valid()

    def build_model(self) -> nn.Module:
        return LastStepClassifier("lstm", int(self.cfg.hidden), 10)
