"""The learning-rate range test, then AdamW with a cosine schedule at the lr it suggests.

Smith 2017, "Cyclical Learning Rates for Training Neural Networks" (WACV), section 3.3: train
briefly while the lr grows exponentially and read a good lr off the loss curve. The sweep is
torch-lr-finder's (LRFinder.range_test: lr from 1e-7 to 10, exponential, the loss smoothed with
0.05, stopped once it passes 5x its best) on the run's first batches, from the initial weights;
the lr is the package's suggestion rule (the steepest descent of the smoothed loss, 10 points
skipped at the start and 5 at the end). LRFinder then restores the initial weights, and AdamW
(torch's defaults otherwise) trains from them at that lr under torch's CosineAnnealingLR for the
steps left: the sweep's steps are spent, so the method's curve is on the run's own step axis,
its validation loss the initial one until the sweep's steps have passed.
"""
from __future__ import annotations

import contextlib
import io
import math
import time

import numpy as np
import torch
from torch import nn

from lhopt_cli.tasks import Task
from lhopt_cli.inner.loop import RunResult
from lhopt_cli.inner.optim import read_hparams

START_LR, END_LR = 1e-7, 10.0  # torch-lr-finder's documented range (start: the optimizer's lr)
SKIP_START, SKIP_END = 10, 5  # the package's suggestion rule trims these points


def sweep_steps(total_steps: int) -> int:
    """The sweep's length: the package's default 100 steps, at most a tenth of the run, at least
    SKIP_START + SKIP_END + 2 (what the suggestion rule needs), and never more than half the run
    (a run of a few steps sweeps over what it can spare)."""
    return max(1, min(max(SKIP_START + SKIP_END + 2, min(100, total_steps // 10)), total_steps // 2))


class _LossModel(nn.Module):
    """The task's model whose forward returns the task's loss on a batch (LRFinder calls
    criterion(model(inputs), labels): here criterion passes the loss through)."""

    def __init__(self, task: Task, model: nn.Module):
        super().__init__()
        self.task, self.model = task, model

    def forward(self, batch):
        return self.task.loss(self.model, batch)


class _Epochs:
    """The run's batches in its data order, from the first again each time it is iterated."""

    def __init__(self, task: Task, seed: int):
        self.task, self.seed = task, seed

    def __iter__(self):
        return iter(self.task.train_batches(self.seed))


def suggested_lr(task: Task, model: nn.Module, seed: int, steps: int) -> float:
    """The range test's lr on `model` (restored to its weights afterwards). A sweep that stopped
    before the suggestion rule has its points reads the steepest point of what it has."""
    from torch_lr_finder import LRFinder, TrainDataLoaderIter

    class Batches(TrainDataLoaderIter):
        def inputs_labels_from_batch(self, batch_data):
            return batch_data, None

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=START_LR)
    finder = LRFinder(_LossModel(task, model), optimizer, lambda loss, _: loss)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its prints and bar
        finder.range_test(Batches(_Epochs(task, seed)), end_lr=END_LR, num_iter=steps)
    lrs, losses = finder.history["lr"], finder.history["loss"]
    finder.reset()
    if len(lrs) >= SKIP_START + SKIP_END + 2:
        lrs, losses = lrs[SKIP_START:-SKIP_END], losses[SKIP_START:-SKIP_END]
    finite = [i for i, v in enumerate(losses) if math.isfinite(v)]
    if len(finite) < 2:
        return START_LR
    steepest = int(np.gradient(np.array([losses[i] for i in finite])).argmin())
    return float(lrs[finite[steepest]])


def range_test_run(task: Task, seed: int) -> RunResult:
    """One epoch of `task` under the range test then cosine AdamW: a RunResult like
    train_one_epoch's (validation at step 0 and the task's eval steps; a non-finite loss ends the
    run as diverged)."""
    model = task.make_model(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    spent = sweep_steps(task.total_steps)
    start = time.perf_counter()
    model.train()
    initial_valid = task.valid_loss(model)
    lr = suggested_lr(task, model, seed, spent)
    optimizer = torch.optim.AdamW(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, task.total_steps - spent))
    eval_at = set(task.eval_steps())
    curve: list[dict] = []
    recent: list[float] = []

    def record(step: int, valid: float) -> None:
        train = sum(recent) / len(recent) if recent else math.nan
        curve.append({"step": step, "train_loss": train, "valid_loss": valid, **read_hparams(optimizer).as_dict(),
                      "wall_s": time.perf_counter() - start})
        recent.clear()

    record(0, initial_valid)
    for step in sorted(s for s in eval_at if s <= spent):  # still at the initial weights there
        record(step, initial_valid)
    status, step = "done", spent
    for step, batch in zip(range(spent, task.total_steps), task.train_batches(seed)):
        loss = task.loss(model, batch)
        value = float(loss.detach())
        recent.append(value)
        if not math.isfinite(value):
            status = "diverged"
            record(step, task.valid_loss(model))
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step + 1 in eval_at:
            valid = task.valid_loss(model)
            record(step + 1, valid)
            if not math.isfinite(valid):
                status = "diverged"
                break
        step += 1
    return RunResult(status, step, curve, time.perf_counter() - start)
