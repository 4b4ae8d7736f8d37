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

A run can also blow up without a non-finite loss: a learning rate far too high sends a network to
chance-level loss, finite, where it stays (resnet_mnist under the policy bundled in 2026-11: lr
0.25 in its first decisions, validation loss 2.31 to the end). A validation loss at or above the
run's starting one once STALL_AFTER of the run has passed is such a stall. Its guard point may
already be past saving (dead units, weights at chance), and nothing learned is lost by going back
to the run's start: the run returns there, with half the smaller of the learning rates now and at
the start (the start then remembers the halved value, so a run that stalls again halves again),
and later returns go there too until a new point holds.

A plateau is not a runaway, though: a run whose validation loss sits near its start's while its
training loss has fallen is learning (slowly, or fitting new data after a pretrained start), and
sending it back to step 0 throws that away. Under STALL_RULE "runaway" a stall also needs the
training loss not to have fallen: the median of its latest START_STEPS training losses above
(1 - STALL_TRAIN_MARGIN) x the run's start, the median of its first START_STEPS (medians: a
spike, or the good steps before a blow-up, do not decide). "start" is the rule without that check,
"off" no stall rule at all (docs/results.md measures the three).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import replace

from lhopt_cli.inner.optim import HParams

GUARD_LR_FACTOR = 0.5
GUARD_LOSS_FACTOR = math.inf  # a training loss this many times the first one has blown up
LOWEST_LR = 1e-8  # the actions' lower bound on the learning rate (control/actions.py BOUNDS)
STALL_AFTER = 0.25  # share of the run after which a validation loss at or above the start's is a stall
STALL_RULE = "runaway"  # "runaway", "start" (the validation loss alone) or "off": docs/results.md measures them
STALL_RULES = ("runaway", "start", "off")
STALL_TRAIN_MARGIN = 0.05  # the training loss has fallen once it is 5% below the start's
START_STEPS = 10  # training losses whose median is the run's start


def guarded_hparams(now: HParams, at_point: HParams) -> HParams:
    """The hyperparameters after a return to a guard point: those of the point, with the
    learning rate at GUARD_LR_FACTOR x min(lr now, lr at the point), never below LOWEST_LR.
    A zero learning rate (a user's frozen group scale) stays zero."""
    lr = min(now.lr, at_point.lr)
    return replace(at_point, lr=0.0 if lr == 0 else max(GUARD_LR_FACTOR * lr, LOWEST_LR))


def stalled(valid: float, initial_valid: float | None, step: int, total_steps: int,
            train_now: float | None = None, train_start: float | None = None) -> bool:
    """Whether a finite validation loss at `step` shows a run that has learned nothing since its
    start: past STALL_AFTER of the run's `total_steps`, at or above the validation loss at step 0
    (`initial_valid`; None or not finite: nothing to compare with), and under STALL_RULE
    "runaway" a training loss that has not fallen: `train_now` (the median of the latest
    START_STEPS steps taken, train_median) not below (1 - STALL_TRAIN_MARGIN) x `train_start`
    (the same of the run's first START_STEPS);
    either unknown or not finite: the validation loss alone decides. Never under "off"."""
    if STALL_RULE == "off":
        return False
    if initial_valid is None or not math.isfinite(initial_valid) or not math.isfinite(valid):
        return False
    if not (step >= STALL_AFTER * total_steps and valid >= initial_valid):
        return False
    if STALL_RULE == "runaway" and train_fell(train_now, train_start):
        return False  # a plateau: the run is learning
    return True


def train_fell(train_now: float | None, train_start: float | None) -> bool:
    """Whether the training loss has fallen since the start: `train_now` below `train_start` by
    more than STALL_TRAIN_MARGIN of its size (False where either is unknown or not finite)."""
    if train_now is None or train_start is None or not (math.isfinite(train_now) and math.isfinite(train_start)):
        return False
    return train_now < train_start - STALL_TRAIN_MARGIN * abs(train_start)


def train_median(losses) -> float | None:
    """The median of START_STEPS training losses (the run's first, or its latest; None until
    there are that many)."""
    losses = list(losses)
    if len(losses) < START_STEPS:
        return None
    return float(statistics.median(losses[:START_STEPS]))


def healthy(loss: float, first_loss: float | None) -> bool:
    """Whether a training loss shows a run that has not blown up: finite, and at most
    GUARD_LOSS_FACTOR x the run's first training loss when that one is positive (None: not
    seen yet, e.g. the first loss itself)."""
    if not math.isfinite(loss):
        return False
    if first_loss is None or first_loss <= 0 or math.isinf(GUARD_LOSS_FACTOR):
        return True
    return loss <= GUARD_LOSS_FACTOR * first_loss
