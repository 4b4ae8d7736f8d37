"""The divergence guard: a run whose loss blows up goes back to its last guard point.

A learned schedule that raises the learning rate too far ends a run with a non-finite loss, and
such a run measures a speedup of 0 however well it went before. With the guard, the engine
(inner/batched.py) and `Controller` offer the state at every decision (weights, optimizer
moments, clipping state, hyperparameters) as a guard point, which holds once the loss of the
next update from it is healthy: finite, and at most GUARD_LOSS_FACTOR x the run's first
training loss where that first loss is positive. A training loss that is not healthy, or a
validation loss that is not finite, loads the point back with half the smaller of the learning
rates then and now.

GUARD_LOSS_FACTOR is infinite (only NaN/inf counts): chosen on the validation suite, where a 4x
rule left the median unchanged but sent a noisy quadratic back on a batch loss (nqm_1 4.02x ->
3.32x); docs/results.md. The step that found the bad loss takes no update but counts: a guard costs compute as
a restart does. A run that keeps diverging halves its learning rate each time, down to the
lowest value the actions allow, so it ends finite unless the task diverges at any rate.
"""
from __future__ import annotations

import math
from dataclasses import replace

from .optim import HParams

GUARD_LR_FACTOR = 0.5
GUARD_LOSS_FACTOR = math.inf  # a training loss this many times the first one has blown up
LOWEST_LR = 1e-8  # the actions' lower bound on the learning rate (control/actions.py BOUNDS)


def guarded_hparams(now: HParams, at_point: HParams) -> HParams:
    """The hyperparameters after a return to a guard point: those of the point, with the
    learning rate at GUARD_LR_FACTOR x min(lr now, lr at the point), never below LOWEST_LR.
    A zero learning rate (a user's frozen group scale) stays zero."""
    lr = min(now.lr, at_point.lr)
    return replace(at_point, lr=0.0 if lr == 0 else max(GUARD_LR_FACTOR * lr, LOWEST_LR))


def healthy(loss: float, first_loss: float | None) -> bool:
    """Whether a training loss shows a run that has not blown up: finite, and at most
    GUARD_LOSS_FACTOR x the run's first training loss when that one is positive (None: not
    seen yet, e.g. the first loss itself)."""
    if not math.isfinite(loss):
        return False
    if first_loss is None or first_loss <= 0 or math.isinf(GUARD_LOSS_FACTOR):
        return True
    return loss <= GUARD_LOSS_FACTOR * first_loss
