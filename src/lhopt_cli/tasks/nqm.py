"""Noisy quadratic model (Zhang et al. 2019): L(x) = 1/2 sum_i h_i x_i^2, noisy gradients."""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn

from lhopt_cli.tasks.base import Task


def curvatures(dim: int, condition: float) -> torch.Tensor:
    """Eigenvalues log-spaced from 1 down to 1 / condition."""
    return torch.logspace(0.0, -math.log10(condition), dim)


class NoisyQuadratic(nn.Module):
    def __init__(self, dim: int, condition: float):
        super().__init__()
        self.register_buffer("curvature", curvatures(dim, condition))
        self.x = nn.Parameter(torch.randn(dim))

    def forward(self, shift: torch.Tensor) -> torch.Tensor:  # shift: (dim,) noise of one batch
        return 0.5 * (self.curvature * (self.x - shift) ** 2).sum()


class Nqm(Task):
    """Each step's minibatch shifts the optimum by noise of variance noise^2 / (h_i * batch),
    so the gradient noise has covariance proportional to the curvature, as in the NQM."""

    @property
    def steps_per_epoch(self) -> int:
        return int(self.cfg.steps)

    @property
    def examples_per_step(self) -> int:
        return int(self.cfg.batch_size)

    def build_model(self) -> nn.Module:
        return NoisyQuadratic(int(self.cfg.dim), float(self.cfg.condition))

    def train_batches(self, seed: int) -> Iterator[torch.Tensor]:
        gen = torch.Generator().manual_seed(10_007 * seed + 29)
        curvature = curvatures(int(self.cfg.dim), float(self.cfg.condition))
        scale = float(self.cfg.noise) / torch.sqrt(curvature * int(self.cfg.batch_size))
        for _ in range(self.total_steps):
            yield torch.randn(int(self.cfg.dim), generator=gen) * scale

    def loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return model(batch)

    def valid_batches(self) -> list[tuple[torch.Tensor, float]]:
        return [(torch.zeros(int(self.cfg.dim)), 1.0)]  # no noise: the exact expected loss
