"""A causal byte-level transformer on text every Python install has (or a user's file)."""
from __future__ import annotations

import math

import torch
from torch import nn

from lhopt_cli.tasks.algorithmic import RecurrentNet
from lhopt_cli.tasks.base import ArrayClassificationTask
from lhopt_cli.tasks.data import DataUnavailable, python_source, read_text_bytes


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


def check_text_size(size: int, context: int, batch_size: int, source: str | None = None) -> None:
    """Raise DataUnavailable (one line) when `size` bytes of text cannot fill one training batch
    of `batch_size` windows of `context` + 1 bytes from the first 90% and one validation window
    from the last 10% (CharLm's split)."""
    split = int(0.9 * size)
    train, valid = max(split - 1, 0) // context, max(size - split - 1, 0) // context
    if train >= batch_size and valid >= 1:
        return
    where = f"task.text_path {source}" if source else "the text"
    needed = math.ceil((batch_size * context + 1) / 0.9) + context + 1
    what = "is empty" if size == 0 else f"has {size} bytes"
    raise DataUnavailable(f"{where} {what}: a byte model with context {context} and batch size {batch_size} "
                          f"needs about {needed} or more")


class CharLm(ArrayClassificationTask):
    VOCAB = 256  # bytes

    def __init__(self, cfg):
        super().__init__(cfg)
        raw = self._bytes()
        check_text_size(len(raw), int(self.cfg.context), int(self.cfg.batch_size), self.cfg.get("text_path"))
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
        window = int(self.cfg.context) + 1
        split = int(0.9 * len(data))
        train, valid = self._windows(data[:split], window), self._windows(data[split:], window)
        self.x_train, self.y_train = train[:, :-1], train[:, 1:]
        self.x_valid, self.y_valid = valid[:, :-1], valid[:, 1:]
        self._limit_valid()

    def _bytes(self) -> bytes:
        return read_text_bytes(self.cfg.text_path, int(self.cfg.max_chars))

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


class CharLmFinetune(CharLm):
    """char_lm fine-tuned: the transformer starts from weights pretrained for `pretrain_steps` on
    the standard library's source code (cached; tasks/pretrain.py), then trains one epoch on prose
    (pydoc's topics, or a user's file): a released checkpoint adapted to another corpus."""

    def pretrain_batches(self):
        """The source corpus: the standard library's source code, as many windows as the
        pretraining needs, batches of `batch_size` windows of `context` + 1 bytes."""
        c = self.cfg
        needed = int(c.pretrain_steps) * int(c.batch_size) * int(c.context) + int(c.context) + 1
        code = torch.frombuffer(bytearray(python_source(needed).encode()), dtype=torch.uint8).long()
        windows = self._windows(code, int(c.context) + 1)
        for start in range(0, len(windows) - int(c.batch_size) + 1, int(c.batch_size)):
            chunk = windows[start:start + int(c.batch_size)]
            yield chunk[:, :-1], chunk[:, 1:]


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

    def _bytes(self) -> bytes:
        return python_source(int(self.cfg.max_chars)).encode()


    def build_model(self) -> nn.Module:
        return GruLm(self.VOCAB, int(self.cfg.d_model), int(self.cfg.hidden))

    def embedding_params(self, model: nn.Module) -> int:
        return model.token.weight.numel()
