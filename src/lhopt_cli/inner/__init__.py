"""The inner loop: one epoch of AdamW on a task, hyperparameters set by a hook each step."""
from .hooks import Hook, RunContext
from .loop import RunResult, train_one_epoch
from .optim import HParams
from .schedules import SCHEDULES, ScheduleHook, lr_multiplier

__all__ = ["HParams", "Hook", "RunContext", "RunResult", "SCHEDULES", "ScheduleHook", "lr_multiplier", "train_one_epoch"]
