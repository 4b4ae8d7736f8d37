"""The inner loop: one epoch of AdamW on a task, hyperparameters set by a hook each step."""
from lhopt_cli.inner.hooks import Hook, RunContext
from lhopt_cli.inner.loop import RunResult, train_one_epoch
from lhopt_cli.inner.optim import HParams
from lhopt_cli.inner.schedules import SCHEDULES, ScheduleHook, lr_multiplier

__all__ = ["HParams", "Hook", "RunContext", "RunResult", "SCHEDULES", "ScheduleHook", "lr_multiplier", "train_one_epoch"]
