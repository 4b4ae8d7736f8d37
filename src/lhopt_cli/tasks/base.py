"""The Task protocol: one-epoch training problems with a model, data order, loss and costs."""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, Iterator

import torch
from torch import nn


def plain(value: Any) -> Any:
    """`value` as plain data: mappings as dicts, sequences (not strings) as lists, recursively
    (a composed config's task section reads as the dict it holds)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


class TaskSpec(dict):
    """A task's settings (conf/task/ values) as plain data, read as items or attributes
    (spec["batch_size"] is spec.batch_size); a key it lacks is an AttributeError."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Task(ABC):
    """A training problem run for exactly one epoch (or `max_steps`, whichever is first).

    The seed fixes both the model's initialisation and the order of the training data.
    """

    def __init__(self, cfg: Mapping):
        """`cfg`: the task's settings, any mapping (a dict, a composed config's task section)."""
        self.cfg = TaskSpec(plain(cfg))
        self.name: str = self.cfg.name

    # --- what each task defines -------------------------------------------------------
    @property
    @abstractmethod
    def steps_per_epoch(self) -> int: ...

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model, drawn from torch's global RNG."""

    @abstractmethod
    def train_batches(self, seed: int) -> Iterator[Any]:
        """The epoch's batches in the order fixed by `seed` (at least `total_steps` of them)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    @abstractmethod
    def valid_batches(self) -> list[tuple[Any, float]]:
        """The fixed validation set as (batch, weight) pairs; the loss is their weighted mean."""

    @torch.no_grad()
    def valid_loss(self, model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        pairs = self.valid_batches()
        total = sum(float(self.loss(model, batch)) * weight for batch, weight in pairs)
        model.train(was_training)
        return total / sum(weight for _, weight in pairs)

    def member_batches(self, seeds: list[int]) -> Iterator[Any]:
        """Each member's own epoch (as `train_batches(seed)`), stacked along a leading member axis."""
        for parts in zip(*(self.train_batches(seed) for seed in seeds)):
            yield torch.utils.data.default_collate(list(parts))

    @property
    def examples_per_step(self) -> int:
        """Examples (tokens for language models) consumed per step."""
        return int(self.cfg.batch_size)

    def embedding_params(self, model: nn.Module) -> int:
        """Parameters of lookup tables, excluded from N as in scaling-law practice."""
        return 0

    # --- shared behaviour ---------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        cap = self.cfg.get("max_steps")
        return self.steps_per_epoch if cap is None else max(1, min(int(cap), self.steps_per_epoch))

    def eval_steps(self) -> list[int]:
        """Evenly spaced validation steps after step 0, the last one at the end of the run."""
        return eval_steps(self.total_steps, int(self.cfg.eval_points))

    def pretrain_batches(self) -> Iterator[Any]:
        """Batches of data this task never trains or validates on, for `pretrain_steps`
        (tasks/pretrain.py); kinds that offer fine-tuning define it."""
        raise ValueError(f"task {self.name} has no pretraining data: task.pretrain_steps must be 0")

    def make_model(self, seed: int) -> nn.Module:
        """The model of run `seed`: freshly initialised from `seed`, or, with `pretrain_steps`,
        the pretrained weights (the same for every seed; tasks/pretrain.py); with `param_scale`
        s != 1, trained through w = s * w' (tasks/rescale.py: the best lr moves by 1/s)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.build_model()
        if int(self.cfg.get("pretrain_steps") or 0) > 0:
            from lhopt_cli.tasks.pretrain import pretrained_state

            model.load_state_dict(pretrained_state(self))
        scale = self.cfg.get("param_scale")
        if scale is not None and float(scale) != 1.0:
            from lhopt_cli.tasks.rescale import Rescaled

            model = Rescaled(model, float(scale))
        return model

    @cached_property
    def num_params(self) -> int:
        """N: trainable, non-embedding parameters."""
        model = self.make_model(0)
        total = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return total - self.embedding_params(model)

    @cached_property
    def flops_per_step(self) -> float:
        """Forward plus backward FLOPs of one training step, counted by torch on one batch."""
        from torch.utils.flop_counter import FlopCounterMode

        model = self.make_model(0)
        batch = next(iter(self.train_batches(0)))
        with FlopCounterMode(display=False) as counter:
            self.loss(model, batch).backward()
        counted = float(counter.get_total_flops())
        return counted if counted > 0 else 6.0 * self.num_params * self.examples_per_step

    def describe(self) -> str:
        """The task's parameters as canonical JSON (stored with every run)."""
        return json.dumps(self.cfg, sort_keys=True)


def eval_steps(total_steps: int, points: int) -> list[int]:
    """`points` evenly spaced validation steps in (0, total_steps], the last at the end (fewer
    where the run has fewer steps)."""
    points = max(1, int(points))
    return sorted({max(1, round(k * total_steps / points)) for k in range(1, points + 1)})


def epoch_order(n: int, seed: int) -> torch.Tensor:
    """The seeded random order of one epoch over n examples."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(10_007 * seed + 17))


def in_order(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[tuple]:
    """(x, y) in batches of `batch_size` as they are stored, dropping the last partial batch."""
    for start in range(0, len(x) - batch_size + 1, batch_size):
        yield x[start:start + batch_size], y[start:start + batch_size]


def batches_from_arrays(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> Iterator[tuple]:
    """One epoch over (x, y) in a seeded random order, dropping the last partial batch."""
    order = epoch_order(len(x), seed)
    for start in range(0, len(x) - batch_size + 1, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


class ArrayTask(Task):
    """Tasks whose data are in-memory tensors (x, y), batched in a seeded order; the subclass
    gives the loss (cross-entropy in ArrayClassificationTask, mean squared error in
    ArrayRegressionTask)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor

    def _limit_valid(self) -> None:
        size = self.cfg.get("valid_size")
        if size is not None:
            self.x_valid, self.y_valid = self.x_valid[:size], self.y_valid[:size]

    @property
    def steps_per_epoch(self) -> int:
        return len(self.x_train) // int(self.cfg.batch_size)

    def train_batches(self, seed: int) -> Iterator[tuple]:
        return batches_from_arrays(self.x_train, self.y_train, int(self.cfg.batch_size), seed)

    def valid_batches(self, chunk: int = 1024) -> list[tuple[tuple, float]]:
        return [((self.x_valid[i : i + chunk], self.y_valid[i : i + chunk]), float(self.y_valid[i : i + chunk].numel()))
                for i in range(0, len(self.x_valid), chunk)]

    def member_batches(self, seeds: list[int]) -> Iterator[tuple]:
        """Each member's epoch in the order `train_batches(seed)` gives it, gathered in one op."""
        batch = int(self.cfg.batch_size)
        orders = torch.stack([epoch_order(len(self.x_train), seed) for seed in seeds])  # (K, n)
        for start in range(0, len(self.x_train) - batch + 1, batch):
            idx = orders[:, start : start + batch]  # (K, B)
            yield self.x_train[idx], self.y_train[idx]


class ArrayClassificationTask(ArrayTask):
    """In-memory tensors, cross-entropy on integer targets (any leading shape)."""

    def loss(self, model: nn.Module, batch: tuple) -> torch.Tensor:
        x, y = batch
        logits = model(x)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


class ArrayRegressionTask(ArrayTask):
    """In-memory tensors, mean squared error against float targets of the model's output shape."""

    def loss(self, model: nn.Module, batch: tuple) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(model(x), y)
