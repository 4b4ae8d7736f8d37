"""One epoch of training with torch's AdamW and gradient clipping, driven by a hook."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

from lhopt_cli.tasks import Task
from lhopt_cli.inner.hooks import Hook, RunContext
from lhopt_cli.inner.optim import HParams, RollingMaxClipper, apply_hparams, make_adamw, read_hparams
from lhopt_cli.support.threads import on_run_threads


@dataclass
class RunResult:
    status: str  # "done" or "diverged"
    steps: int  # optimizer steps taken
    curve: list[dict] = field(default_factory=list)  # one row per validation point
    wall_s: float = 0.0

    @property
    def final_valid_loss(self) -> float:
        return self.curve[-1]["valid_loss"] if self.curve else math.nan


@on_run_threads
def train_one_epoch(task: Task, seed: int, hook: Hook | None = None, hparams: HParams | None = None,
                    make_optimizer: Callable | None = None) -> RunResult:
    """Train `task` for its total steps from the model and data order fixed by `seed`.

    Validation runs at step 0 and at the task's evenly spaced eval steps. A non-finite
    training or validation loss marks the run diverged and stops it; the curve is kept.
    `make_optimizer(params)` replaces AdamW by another optimizer, which then keeps its own
    hyperparameters (none are written into it; schedule-free's train/eval modes are switched).
    """
    hook = hook or Hook()
    model = task.make_model(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    hp = hparams or HParams()
    optimizer = make_optimizer(params) if make_optimizer else make_adamw(params, hp)
    controlled = make_optimizer is None
    run = RunContext(0, task.total_steps, model, optimizer, hp, RollingMaxClipper())
    modes = hasattr(optimizer, "train") and hasattr(optimizer, "eval")  # schedule-free optimizers

    def validate() -> float:
        if modes:
            optimizer.eval()
        value = task.valid_loss(model)
        if modes:
            optimizer.train()
        return value

    eval_at = set(task.eval_steps())
    start = time.perf_counter()
    curve: list[dict] = []
    recent: list[float] = []  # train losses since the last validation point

    def record(step: int, valid: float) -> None:
        train = sum(recent) / len(recent) if recent else math.nan
        hparams = run.hparams if controlled else read_hparams(optimizer)  # what the optimizer holds
        curve.append({"step": step, "train_loss": train, "valid_loss": valid, **hparams.as_dict(),
                      "wall_s": time.perf_counter() - start})
        recent.clear()

    model.train()
    if modes:
        optimizer.train()
    initial_valid = validate()
    hook.on_start(run)
    status = "done"
    for step, batch in zip(range(run.total_steps), task.train_batches(seed)):
        run.step = step
        hook.before_step(run)
        if controlled:
            apply_hparams(run.optimizer, run.hparams)
        if step == 0:
            record(0, initial_valid)  # with the hyperparameters the hook chose for the first step
        loss = task.loss(model, batch)
        value = float(loss.detach())
        recent.append(value)
        if not math.isfinite(value):
            status = "diverged"
            record(step, validate())
            break
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.grad_norm, run.clipped = run.clipper(params, run.hparams.clip)
        run.optimizer.step()
        run.step = step + 1
        hook.after_step(run, value)
        if run.step in eval_at:
            valid = validate()
            record(run.step, valid)
            hook.on_eval(run, valid)
            if not math.isfinite(valid):
                status = "diverged"
                break
    return RunResult(status, run.step, curve, time.perf_counter() - start)
