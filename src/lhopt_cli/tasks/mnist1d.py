"""A small 1-D CNN on mnist1d, generated locally with the mnist1d package."""
from __future__ import annotations

import torch
from torch import nn

from lhopt_cli.tasks.base import ArrayClassificationTask
from lhopt_cli.tasks.data import mnist1d


class Mnist1dConv(ArrayClassificationTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        num_train, num_valid = int(self.cfg.num_train), int(self.cfg.num_valid)
        data = mnist1d(num_train + num_valid)
        x = torch.from_numpy(data["x"]).unsqueeze(1)  # (n, 1, 40)
        y = torch.from_numpy(data["y"])
        self.x_train, self.y_train = x[:num_train], y[:num_train]
        self.x_valid, self.y_valid = x[num_train:], y[num_train:]
        self._limit_valid()

    def build_model(self) -> nn.Module:
        first, second = self.cfg.channels
        return nn.Sequential(
            nn.Conv1d(1, first, 5, stride=2, padding=2), nn.ReLU(),  # (n, first, 20)
            nn.Conv1d(first, second, 3, stride=2, padding=1), nn.ReLU(),  # (n, second, 10)
            nn.Flatten(), nn.Linear(second * 10, 10),
        )
