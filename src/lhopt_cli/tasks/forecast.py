"""Forecasting a real time series: Mauna Loa CO2 (weekly, 1958-2001, shipped with statsmodels).

From the last `window` weeks, predict the next `horizon` weeks (mean squared error). Each window
is taken relative to its last observed week and scaled by the training windows' spread of the
target changes, the usual way to make a trending series stationary, so a model learns the seasonal
shape rather than the level. The first 80% of the weeks train, the last 20% validate: the model is
judged on the future, as a forecaster is. A GRU reads the window and forecasts from its last step.
"""
from __future__ import annotations

import torch
from torch import nn

from lhopt_cli.tasks.algorithmic import RecurrentNet
from lhopt_cli.tasks.base import ArrayRegressionTask
from lhopt_cli.tasks.data import co2_weekly


class GruForecaster(nn.Module):
    """A GRU over the window (written with nn.Linear: the batched engine vmaps it); the last
    step's output is the forecast."""

    def __init__(self, hidden: int, horizon: int):
        super().__init__()
        self.rnn = RecurrentNet("gru", 1, hidden, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, window) -> (B, horizon)
        return self.rnn(x.unsqueeze(-1))[:, -1]


def co2_window_counts(weeks: int, window: int, horizon: int) -> tuple[int, int]:
    """(training, validation) windows of `window` + `horizon` weeks in a series of `weeks`: the
    training ones end by the cut at 80%, the validation ones forecast weeks after it."""
    cut = int(0.8 * weeks)
    return cut - window - horizon + 1, weeks - cut - horizon + 1


class Co2Forecast(ArrayRegressionTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        series = torch.from_numpy(co2_weekly())
        window, horizon = int(self.cfg.window), int(self.cfg.horizon)
        span = window + horizon
        starts = torch.arange(len(series) - span + 1)
        pieces = series[starts[:, None] + torch.arange(span)]  # (N, window + horizon)
        pieces = pieces - pieces[:, window - 1:window]  # relative to the last observed week
        n_train, n_valid = co2_window_counts(len(series), window, horizon)
        train, valid = pieces[:n_train], pieces[len(pieces) - n_valid:]
        scale = train[:, window:].std()
        train, valid = train / scale, valid / scale
        self.x_train, self.y_train = train[:, :window], train[:, window:]
        self.x_valid, self.y_valid = valid[:, :window], valid[:, window:]
        self._limit_valid()

    def build_model(self) -> nn.Module:
        return GruForecaster(int(self.cfg.hidden), int(self.cfg.horizon))
