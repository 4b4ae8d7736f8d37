"""MLP and CNN on MNIST-5k (4,000 train / 1,000 valid, a fixed split)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lhopt_cli.tasks.base import ArrayClassificationTask
from lhopt_cli.tasks.data import mnist_5k

NUM_TRAIN = 4000


def _mnist_split() -> tuple[torch.Tensor, ...]:
    images, labels = mnist_5k()
    order = np.random.default_rng(0).permutation(len(labels))  # fixed split, same everywhere
    train, valid = order[:NUM_TRAIN], order[NUM_TRAIN:]
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    return x[train], y[train], x[valid], y[valid]


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}
NORMS = {"none": None, "layernorm": nn.LayerNorm}


def mlp(inputs: int, hidden, outputs: int, activation: str = "relu", norm: str = "none") -> nn.Sequential:
    if activation not in ACTIVATIONS or norm not in NORMS:
        raise ValueError(f"mlp: activation one of {sorted(ACTIVATIONS)}, norm one of {sorted(NORMS)}")
    layers: list[nn.Module] = []
    width = inputs
    for size in hidden:
        layers.append(nn.Linear(width, size))
        if NORMS[norm] is not None:
            layers.append(NORMS[norm](size))
        layers.append(ACTIVATIONS[activation]())
        width = size
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


class MlpMnist(ArrayClassificationTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.x_train, self.y_train, self.x_valid, self.y_valid = _mnist_split()
        self._limit_valid()

    def build_model(self) -> nn.Module:
        return mlp(self.x_train.shape[1], self.cfg.hidden, 10, self.cfg.activation, self.cfg.norm)


class MlpDigits(MlpMnist):
    """MLP on scikit-learn's 8x8 digits (1,797 images shipped with the package; 1,437 train)."""

    def __init__(self, cfg):
        ArrayClassificationTask.__init__(self, cfg)
        from sklearn.datasets import load_digits

        images, labels = load_digits(return_X_y=True)
        order = np.random.default_rng(0).permutation(len(labels))
        x = torch.from_numpy(images[order] / 16.0).float()
        y = torch.from_numpy(labels[order]).long()
        self.x_train, self.y_train, self.x_valid, self.y_valid = x[:1437], y[:1437], x[1437:], y[1437:]
        self._limit_valid()


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


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(4, channels), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(4, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class ResnetMnist(CnnMnist):
    """A residual CNN on MNIST-5k downsampled to 14x14 (2x2 means), deeper than any network the
    training family draws: a stem, `blocks` residual blocks per stage at 14x14 and 7x7, global
    average pooling."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.x_train = nn.functional.avg_pool2d(self.x_train, 2)
        self.x_valid = nn.functional.avg_pool2d(self.x_valid, 2)

    def build_model(self) -> nn.Module:
        width, blocks = int(self.cfg.width), int(self.cfg.blocks)
        layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]  # 14 x 14
        layers += [ResidualBlock(width) for _ in range(blocks)]
        layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU()]  # 14 -> 7
        layers += [ResidualBlock(2 * width) for _ in range(blocks)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 10)]
        return nn.Sequential(*layers)


class RowTransformer(nn.Module):
    """A transformer encoder over an image's rows as tokens, mean-pooled to class logits."""

    def __init__(self, rows: int, row_size: int, d_model: int, n_head: int, n_layer: int, classes: int):
        super().__init__()
        self.embed = nn.Linear(row_size, d_model)
        self.position = nn.Parameter(torch.zeros(rows, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_head, 2 * d_model, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, rows, row_size) -> (B, classes)
        return self.head(self.blocks(self.embed(x) + self.position).mean(1))


class DigitsTransformer(MlpDigits):
    """sklearn's 8x8 digits read as 8 tokens of 8 pixels by a small transformer classifier."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.x_train, self.x_valid = self.x_train.view(-1, 8, 8), self.x_valid.view(-1, 8, 8)

    def build_model(self) -> nn.Module:
        c = self.cfg
        return RowTransformer(8, 8, int(c.d_model), int(c.n_head), int(c.n_layer), 10)
