"""The 7 baseline schedules (and the wsd decay), as applied by ScheduleHook in a real run, against torch's lr schedulers.

For every step t of a run of T steps (t = 0 .. T-1), the lr our hook sets before the t-th
optimizer step must equal the lr a torch.optim.lr_scheduler gives after t scheduler steps.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.optim import lr_scheduler

from lhopt_cli.config.compose import compose
from lhopt_cli.inner import SCHEDULES, HParams, ScheduleHook, lr_multiplier, train_one_epoch
from lhopt_cli.tasks import build_task

LR0 = 0.05
TOTALS = (40, 37, 125)


def torch_scheduler(name: str, optimizer: torch.optim.Optimizer, total: int, lr0: float):
    if name == "constant":
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=total)
    if name == "multistep":
        return lr_scheduler.MultiStepLR(optimizer, milestones=[math.ceil(0.5 * total), math.ceil(0.75 * total)], gamma=0.1)
    if name == "linear":
        return lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=total)
    if name == "quadratic":
        return lr_scheduler.PolynomialLR(optimizer, total_iters=total, power=2)
    if name == "exponential":
        return lr_scheduler.ExponentialLR(optimizer, gamma=0.01 ** (1.0 / total))
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=0.0)
    if name == "cosine_to_0.1":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=0.1 * lr0)
    if name == "wsd":  # constant to the first step at 80% of the run, then linear to zero at the end
        start = math.ceil(0.8 * total)
        return lr_scheduler.SequentialLR(optimizer, [
            lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=start),
            lr_scheduler.LinearLR(optimizer, start_factor=(total - start) / (0.2 * total), end_factor=0.0,
                                  total_iters=total - start)], milestones=[start])
    raise AssertionError(f"no torch counterpart for {name}")


def torch_lrs(name: str, total: int, lr0: float) -> list[float]:
    """The lr a torch optimizer uses at each of `total` steps under its scheduler."""
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([param], lr=lr0)
    scheduler = torch_scheduler(name, optimizer, total, lr0)
    lrs = []
    for _ in range(total):
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        param.grad = torch.ones_like(param)
        optimizer.step()
        scheduler.step()
    return lrs


class RecordingScheduleHook(ScheduleHook):
    """ScheduleHook that records the lr it sets and the lr the optimizer then stepped with."""

    def __init__(self, schedule: str, base: HParams):
        super().__init__(schedule, base)
        self.steps: list[int] = []
        self.set_lrs: list[float] = []
        self.applied_lrs: list[float] = []

    def before_step(self, run) -> None:
        super().before_step(run)
        self.steps.append(run.step)
        self.set_lrs.append(run.hparams.lr)

    def after_step(self, run, train_loss: float) -> None:
        self.applied_lrs.append(float(run.optimizer.param_groups[0]["lr"]))


@pytest.fixture(scope="module")
def nqm_tasks():
    tasks = {}
    for total in TOTALS:
        cfg = compose("baseline_grid", ["task=nqm", "task.dim=10", f"task.steps={total}", "task.eval_points=5"])
        tasks[total] = build_task(cfg.task)
    return tasks


def test_the_seven_schedules_of_the_grid_and_the_decays_a_policy_can_run_under():
    seven = ["constant", "multistep", "linear", "quadratic", "exponential", "cosine", "cosine_to_0.1"]
    assert list(compose("baseline_grid", []).grid.schedules) == seven
    assert list(SCHEDULES) == seven + ["wsd"]


@pytest.mark.parametrize("total", TOTALS)
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_matches_torch_scheduler_every_step(nqm_tasks, name, total):
    task = nqm_tasks[total]
    assert task.total_steps == total
    hook = RecordingScheduleHook(name, HParams(lr=LR0))
    result = train_one_epoch(task, seed=0, hook=hook)
    assert result.status == "done"
    assert result.steps == total
    assert hook.steps == list(range(total))

    expected = torch_lrs(name, total, LR0)
    assert len(hook.set_lrs) == len(expected) == total
    for step, (ours, theirs) in enumerate(zip(hook.set_lrs, expected)):
        assert ours == pytest.approx(theirs, rel=1e-6, abs=0.0), f"{name} T={total} step {step}: {ours} != {theirs}"
    # what the hook set is what AdamW stepped with
    assert hook.applied_lrs == hook.set_lrs
    # and the multiplier function agrees with the hook
    for step, ours in enumerate(hook.set_lrs):
        assert ours == pytest.approx(LR0 * lr_multiplier(name, step, total), rel=1e-12)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_starts_at_lr0_and_keeps_other_hparams(nqm_tasks, name):
    base = HParams(lr=LR0, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.1, clip=0.7)
    hook = RecordingScheduleHook(name, base)
    result = train_one_epoch(nqm_tasks[40], seed=0, hook=hook)
    assert hook.set_lrs[0] == pytest.approx(LR0, rel=1e-12)
    for row in result.curve[1:]:
        assert (row["beta1"], row["beta2"], row["eps"], row["weight_decay"], row["clip"]) == (0.8, 0.95, 1e-6, 0.1, 0.7)


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="unknown schedule"):
        ScheduleHook("warmup_cosine", HParams())
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_multiplier("warmup_cosine", 0, 10)
