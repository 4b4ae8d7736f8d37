"""MLP and CNN on MNIST-5k (4,000 train / 1,000 valid, a fixed split)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import ArrayClassificationTask
from .data import mnist_5k

NUM_TRAIN = 4000


def _mnist_split() -> tuple[torch.Tensor, ...]:
    images, labels = mnist_5k()
    order = np.random.default_rng(0).permutation(len(labels))  # fixed split, same everywhere
    train, valid = order[:NUM_TRAIN], order[NUM_TRAIN:]
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    return x[train], y[train], x[valid], y[valid]


class MlpMnist(ArrayClassificationTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.x_train, self.y_train, self.x_valid, self.y_valid = _mnist_split()
        self._limit_valid()

    def build_model(self) -> nn.Module:
        layers: list[nn.Module] = []
        width = 784
        for hidden in self.cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 10))
        return nn.Sequential(*layers)


class CnnMnist(ArrayClassificationTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        x_train, self.y_train, x_valid, self.y_valid = _mnist_split()
        self.x_train, self.x_valid = x_train.view(-1, 1, 28, 28), x_valid.view(-1, 1, 28, 28)
        self._limit_valid()

    def build_model(self) -> nn.Module:
        layers: list[nn.Module] = []
        width, side = 1, 28
        for channels in self.cfg.channels:
            layers += [nn.Conv2d(width, channels, 3, stride=2, padding=1), nn.ReLU()]
            width, side = channels, (side + 1) // 2
        layers += [nn.Flatten(), nn.Linear(width * side * side, 10)]  # (B, width * side^2) -> (B, 10)
        return nn.Sequential(*layers)
