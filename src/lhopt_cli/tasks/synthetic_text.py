"""Generated text for the meta-training family: a small transformer language model on an
order-2 Markov language, and recurrent classification of which Markov source wrote a sequence.

Both languages are drawn from `data_seed`, so a family instance fixes its language, and nothing
is downloaded. The test suite's text tasks (char_lm, code_lm) read real text with other models;
these kinds give the policy sequence models to train on without them.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lhopt_cli.tasks.algorithmic import RecurrentNet
from lhopt_cli.tasks.base import ArrayClassificationTask


class Block(nn.Module):
    """A pre-norm transformer block with attention written out in matmuls (torch's fused
    attention has no vmap batching rule, so the batched engine would run it member by member)."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv, self.proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, T, d), (T, T) bool
        batch, steps, width = h.shape
        q, k, v = self.qkv(self.norm1(h)).split(width, dim=-1)
        q, k, v = (t.reshape(batch, steps, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        attn = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v
        h = h + self.proj(attn.transpose(1, 2).reshape(batch, steps, width))
        return h + self.mlp(self.norm2(h))


class TinyTransformerLm(nn.Module):
    """Token and position embeddings -> `n_layer` causal blocks -> layer norm -> logits."""

    def __init__(self, vocab: int, context: int, d_model: int, n_head: int, n_layer: int):
        super().__init__()
        self.token = nn.Embedding(vocab, d_model)
        self.position = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_head) for _ in range(n_layer))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)
        self.register_buffer("mask", torch.ones(context, context, dtype=torch.bool).tril(), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, vocab)
        steps = idx.shape[1]
        h = self.token(idx) + self.position.weight[:steps]
        for block in self.blocks:
            h = block(h, self.mask[:steps, :steps])
        return self.head(self.norm(h))


def markov_table(rng: np.random.Generator, contexts: int, vocab: int, concentration: float) -> np.ndarray:
    """(contexts, vocab) next-token distributions, each Dirichlet(concentration): a small
    concentration makes a few successors likely (a predictable language), a large one uniform."""
    return rng.dirichlet(np.full(vocab, concentration), size=contexts)


def sample_chain(rng: np.random.Generator, table: np.ndarray, count: int, length: int, vocab: int,
                 order: int) -> np.ndarray:
    """(count, length) int64 token sequences of an order-1 or order-2 chain whose rows are
    indexed by the last `order` tokens (first tokens uniform)."""
    seq = np.empty((count, length), dtype=np.int64)
    seq[:, :order] = rng.integers(0, vocab, (count, order))
    cumulative = np.cumsum(table, axis=1)
    for t in range(order, length):
        row = seq[:, t - 1] if order == 1 else seq[:, t - 2] * vocab + seq[:, t - 1]
        draw = rng.random(count)[:, None]
        seq[:, t] = np.minimum((cumulative[row] < draw).sum(axis=1), vocab - 1)
    return seq


class MarkovLm(ArrayClassificationTask):
    """Next-token prediction on an order-2 Markov language (`vocab` symbols) with a 1-2 layer
    causal transformer; `num_train` sequences of `context` + 1 tokens."""

    def __init__(self, cfg):
        super().__init__(cfg)
        c = self.cfg
        vocab = int(c.vocab)
        rng = np.random.default_rng(int(c.data_seed))
        table = markov_table(rng, vocab * vocab, vocab, float(c.concentration))
        window = int(c.context) + 1
        train = torch.as_tensor(sample_chain(rng, table, int(c.num_train), window, vocab, 2))
        valid = torch.as_tensor(sample_chain(rng, table, int(c.num_valid), window, vocab, 2))
        self.x_train, self.y_train = train[:, :-1], train[:, 1:]
        self.x_valid, self.y_valid = valid[:, :-1], valid[:, 1:]
        self._limit_valid()

    @property
    def examples_per_step(self) -> int:
        return int(self.cfg.batch_size) * int(self.cfg.context)

    def build_model(self) -> nn.Module:
        c = self.cfg
        heads = int(c.n_head)
        width = heads * -(-int(c.d_model) // heads)  # d_model rounded up to a multiple of the heads
        return TinyTransformerLm(int(c.vocab), int(c.context), width, heads, int(c.n_layer))

    def embedding_params(self, model: nn.Module) -> int:
        return model.token.weight.numel() + model.position.weight.numel()


class SequenceClassifier(nn.Module):
    """Token embedding -> recurrent net; the logits at the last step classify the sequence."""

    def __init__(self, vocab: int, d_model: int, cell: str, hidden: int, classes: int):
        super().__init__()
        self.token = nn.Embedding(vocab, d_model)
        self.rnn = RecurrentNet(cell, d_model, hidden, classes)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, classes)
        return self.rnn(self.token(idx))[:, -1]


class SequenceClassification(ArrayClassificationTask):
    """Which of `classes` order-1 Markov sources (`vocab` symbols) wrote a sequence of `length`
    tokens, read by an RNN, GRU or LSTM."""

    def __init__(self, cfg):
        super().__init__(cfg)
        c = self.cfg
        vocab, classes = int(c.vocab), int(c.classes)
        rng = np.random.default_rng(int(c.data_seed))
        tables = [markov_table(rng, vocab, vocab, float(c.concentration)) for _ in range(classes)]

        def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
            labels = rng.integers(0, classes, count)
            seq = np.empty((count, int(c.length)), dtype=np.int64)
            for k, table in enumerate(tables):
                rows = np.flatnonzero(labels == k)
                seq[rows] = sample_chain(rng, table, len(rows), int(c.length), vocab, 1)
            return torch.as_tensor(seq), torch.as_tensor(labels)

        self.x_train, self.y_train = draw(int(c.num_train))
        self.x_valid, self.y_valid = draw(int(c.num_valid))
        self._limit_valid()

    @property
    def examples_per_step(self) -> int:
        return int(self.cfg.batch_size) * int(self.cfg.length)

    def build_model(self) -> nn.Module:
        c = self.cfg
        return SequenceClassifier(int(c.vocab), int(c.d_model), str(c.cell), int(c.hidden), int(c.classes))

    def embedding_params(self, model: nn.Module) -> int:
        return model.token.weight.numel()
