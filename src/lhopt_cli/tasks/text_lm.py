"""A causal byte-level transformer on text every Python install has (or a user's file)."""
from __future__ import annotations

import torch
from torch import nn

from .algorithmic import RecurrentNet
from .base import ArrayClassificationTask
from .data import python_source, read_text


class CausalTransformer(nn.Module):
    def __init__(self, vocab: int, context: int, d_model: int, n_head: int, n_layer: int):
        super().__init__()
        self.token = nn.Embedding(vocab, d_model)
        self.position = nn.Embedding(context, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, n_head, dim_feedforward=4 * d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, vocab)
        steps = idx.shape[1]
        h = self.token(idx) + self.position.weight[:steps]
        h = self.blocks(h, mask=self.mask[:steps, :steps], is_causal=True)
        return self.head(self.norm(h))


class CharLm(ArrayClassificationTask):
    VOCAB = 256  # bytes

    def __init__(self, cfg):
        super().__init__(cfg)
        data = torch.frombuffer(bytearray(self._text().encode()), dtype=torch.uint8)
        data = data.long()
        window = int(self.cfg.context) + 1
        split = int(0.9 * len(data))
        train, valid = self._windows(data[:split], window), self._windows(data[split:], window)
        if len(train) < int(self.cfg.batch_size) or len(valid) == 0:
            raise ValueError(f"char_lm: the text is too short for context {self.cfg.context}")
        self.x_train, self.y_train = train[:, :-1], train[:, 1:]
        self.x_valid, self.y_valid = valid[:, :-1], valid[:, 1:]
        self._limit_valid()

    def _text(self) -> str:
        return read_text(self.cfg.text_path, int(self.cfg.max_chars))

    @staticmethod
    def _windows(tokens: torch.Tensor, window: int) -> torch.Tensor:
        """Non-overlapping windows of `window` bytes (each target byte is seen once per epoch)."""
        count = (len(tokens) - 1) // (window - 1)
        starts = torch.arange(count) * (window - 1)
        return tokens[starts[:, None] + torch.arange(window)]

    @property
    def examples_per_step(self) -> int:
        return int(self.cfg.batch_size) * int(self.cfg.context)

    def build_model(self) -> nn.Module:
        c = self.cfg
        return CausalTransformer(self.VOCAB, int(c.context), int(c.d_model), int(c.n_head), int(c.n_layer))

    def embedding_params(self, model: nn.Module) -> int:
        return model.token.weight.numel() + model.position.weight.numel()


class GruLm(nn.Module):
    """Byte embedding -> GRU (written with nn.Linear, so the batched engine can vmap it) -> logits."""

    def __init__(self, vocab: int, d_model: int, hidden: int):
        super().__init__()
        self.token = nn.Embedding(vocab, d_model)
        self.rnn = RecurrentNet("gru", d_model, hidden, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, vocab)
        return self.rnn(self.token(idx))


class CodeLm(CharLm):
    """A byte-level GRU language model on Python source code: the standard library's modules
    (a corpus and an architecture the training family never draws)."""

    def _text(self) -> str:
        return python_source(int(self.cfg.max_chars))

    def build_model(self) -> nn.Module:
        return GruLm(self.VOCAB, int(self.cfg.d_model), int(self.cfg.hidden))

    def embedding_params(self, model: nn.Module) -> int:
        return model.token.weight.numel()
