"""Algorithmic sequence tasks (running xor, binary addition) with small RNN, GRU or LSTM cells.

The cells are written with nn.Linear in a loop over time, so the batched engine can vmap
them (torch's fused nn.LSTM/nn.GRU kernels have no vmap batching rule).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lhopt_cli.tasks.base import ArrayClassificationTask, in_order

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


class RecurrentNet(nn.Module):
    def __init__(self, cell: str, inputs: int, hidden: int, outputs: int):
        super().__init__()
        if cell not in GATES:
            raise ValueError(f"algorithmic: cell one of {sorted(GATES)}")
        self.cell, self.hidden = cell, hidden
        self.ih = nn.Linear(inputs, GATES[cell] * hidden)
        self.hh = nn.Linear(hidden, GATES[cell] * hidden)
        self.out = nn.Linear(hidden, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, inputs) -> (B, T, outputs)
        h = x.new_zeros(x.shape[0], self.hidden)
        c = torch.zeros_like(h)
        states = []
        for t in range(x.shape[1]):
            gi, gh = self.ih(x[:, t]), self.hh(h)
            if self.cell == "rnn":
                h = torch.tanh(gi + gh)
            elif self.cell == "gru":
                (ri, zi, ni), (rh, zh, nh) = gi.chunk(3, -1), gh.chunk(3, -1)
                r, z = torch.sigmoid(ri + rh), torch.sigmoid(zi + zh)
                h = (1 - z) * torch.tanh(ni + r * nh) + z * h
            else:
                i, f, g, o = (gi + gh).chunk(4, -1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            states.append(h)
        return self.out(torch.stack(states, 1))


def make_sequences(problem: str, count: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (count, length, bits) and per-step targets (count, length), least significant bit first."""
    rng = np.random.default_rng(seed)
    if problem == "xor":
        bits = rng.integers(0, 2, (count, length))
        return torch.tensor(bits[..., None], dtype=torch.float32), torch.tensor(np.cumsum(bits, 1) % 2)
    if problem == "addition":
        a, b = rng.integers(0, 2, (count, length)), rng.integers(0, 2, (count, length))
        total, carry = np.zeros_like(a), np.zeros(count, dtype=np.int64)
        for t in range(length):
            s = a[:, t] + b[:, t] + carry
            total[:, t], carry = s % 2, s // 2
        return torch.tensor(np.stack([a, b], -1), dtype=torch.float32), torch.tensor(total)
    raise ValueError("algorithmic: problem one of ['addition', 'xor']")


class Algorithmic(ArrayClassificationTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        c = self.cfg
        self.x_train, self.y_train = make_sequences(c.problem, int(c.num_train), int(c.length), 0)
        self.x_valid, self.y_valid = make_sequences(c.problem, int(c.num_valid), int(c.length), 1)
        self._limit_valid()

    @property
    def examples_per_step(self) -> int:
        return int(self.cfg.batch_size) * int(self.cfg.length)

    def pretrain_batches(self):
        """Fresh sequences of the same problem (generator seed 2; training uses 0, validation 1),
        up to 16,000 of them in batches of `batch_size`, cycled by the pretraining (tasks/pretrain.py)."""
        c = self.cfg
        count = max(int(c.batch_size), min(16_000, int(c.pretrain_steps) * int(c.batch_size)))
        return in_order(*make_sequences(c.problem, count, int(c.length), 2), int(c.batch_size))

    def build_model(self) -> nn.Module:
        return RecurrentNet(self.cfg.cell, self.x_train.shape[-1], int(self.cfg.hidden), 2)
