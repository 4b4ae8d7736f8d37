"""The 7 baseline learning-rate schedules of docs/method.md section 8, as multipliers f(p), and
`wsd`, a decay offered to run a policy under (`controller.lr_decay`), not one of the grid's seven.

p = step / total_steps is the progress when the step is taken (0 at the first step).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

from lhopt_cli.inner.hooks import Hook
from lhopt_cli.inner.optim import HParams

MILESTONES = (0.5, 0.75)
WSD_DECAY_START = 0.8  # the share of the run held constant before the linear cooldown to zero


def _multistep(p: float) -> float:
    return 0.1 ** sum(p >= m for m in MILESTONES)


def _cosine(p: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * p))


def _wsd(p: float) -> float:
    # warmup-stable-decay without the warmup (no schedule here has one, and a policy sets its own
    # start): constant, then linear to zero over the last 20% (the cooldown of Hägele et al. 2024,
    # arXiv 2405.18392)
    return min(1.0, (1.0 - p) / (1.0 - WSD_DECAY_START))


SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda p: 1.0,
    "multistep": _multistep,
    "linear": lambda p: 1.0 - p,
    "quadratic": lambda p: (1.0 - p) ** 2,
    "exponential": lambda p: 0.01**p,
    "cosine": _cosine,
    "cosine_to_0.1": lambda p: 0.1 + 0.9 * _cosine(p),
    "wsd": _wsd,
}


def lr_multiplier(schedule: str, step: int, total_steps: int) -> float:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule '{schedule}'; known: {', '.join(SCHEDULES)}")
    return SCHEDULES[schedule](step / total_steps)


class ScheduleHook(Hook):
    """Loop hook for a baseline: fixed AdamW hyperparameters, lr = lr0 x f(step / total)."""

    def __init__(self, schedule: str, base: HParams):
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule '{schedule}'; known: {', '.join(SCHEDULES)}")
        self.schedule, self.base = schedule, base

    def before_step(self, run) -> None:
        run.hparams = replace(self.base, lr=self.base.lr * lr_multiplier(self.schedule, run.step, run.total_steps))
