"""The Controller's divergence guard: inner/guard.py's rules applied in a user's own loop.

It keeps the guard point (a state where a healthy loss was seen), the point offered at the last
decision (held once the next loss is healthy), the run's start (where a stall returns), and the
numbers the rules read: the run's first training loss, the validation loss at step 0, and the
first and latest START_STEPS training losses. The engine (inner/batched.py) applies the same
rules to batched members; the Controller's decisions follow it step for step.
"""
from __future__ import annotations

import math
from collections import deque

from lhopt_cli.inner.guard import START_STEPS, guarded_hparams, healthy, stalled, train_median
from lhopt_cli.inner.hooks import clone_tree, restore, snapshot
from lhopt_cli.inner.optim import HParams


class ControllerGuard:
    """The guard's state for one run. `active` False (guard off, or no model to restore) keeps
    only the yardsticks (saved with the Controller's state either way) and never sends a run back.

    `parts` in the methods below is the run's (model, optimizer, clipper): the Controller hands
    them in at each call, since loading a state replaces its clipper."""

    def __init__(self, active: bool, parts: tuple | None = None, hparams: HParams | None = None):
        self.active = bool(active)
        self.point = self._capture(parts, hparams) if self.active else None
        self.start = self.point  # kept apart from the point's recycled tensors: a stall goes back here
        self.offered: dict | None = None
        self.returns = 0
        self._spare: dict | None = None  # a former guard point whose tensors the next one is written into
        self.first_loss: float | None = None  # the run's first training loss: a blow-up's yardstick
        self.initial_valid: float | None = None  # the validation loss at step 0: a stall's yardstick
        self.first_train: list[float] = []
        self.latest_train: deque[float] = deque(maxlen=START_STEPS)

    @staticmethod
    def _capture(parts, hparams: HParams, reuse: dict | None = None) -> dict:
        """The state now as a guard point, written into the tensors of `reuse` (a point no longer
        needed) so that a decision allocates nothing."""
        into = reuse["state"] if reuse is not None else None
        return {"state": snapshot(*parts, into=into), "hparams": hparams.as_dict()}

    # --- the rules -------------------------------------------------------------------------
    def stalled(self, valid_loss: float, step_index: int, total_steps: int) -> bool:
        """A validation loss at or above the start's past STALL_AFTER of the run, with the training
        loss not fallen (inner/guard.py `stalled`); False when inactive."""
        return self.active and stalled(float(valid_loss), self.initial_valid, step_index, total_steps,
                                       train_median(self.latest_train), train_median(self.first_train))

    def diverged(self, loss: float) -> bool:
        """A loss that blew up: not healthy against the first loss (active), or not finite."""
        return not healthy(loss, self.first_loss) if self.active else not math.isfinite(loss)

    def note_valid(self, valid_loss: float, step_index: int) -> None:
        if step_index == 0 and self.initial_valid is None:
            self.initial_valid = valid_loss

    def note_first_loss(self, loss: float) -> None:
        if self.first_loss is None:
            self.first_loss = loss

    def note_train(self, loss: float) -> None:
        """A step taken: the offered point holds (its next loss was healthy); the stall rule's
        training losses grow."""
        if self.offered is not None:
            spare = None if self.point is self.start else self.point  # the start is kept
            self._spare, self.point, self.offered = spare, self.offered, None
        self.latest_train.append(loss)
        if len(self.first_train) < START_STEPS:
            self.first_train.append(loss)

    # --- moves -----------------------------------------------------------------------------
    def offer(self, parts, hparams: HParams) -> None:
        """At a decision: the state now is offered as the next point (a point offered before
        and never held is rewritten in place)."""
        reuse, self._spare = self.offered or self._spare, None
        self.offered = self._capture(parts, hparams, reuse)

    def return_to_point(self, parts, hparams: HParams, stall: bool = False) -> HParams:
        """Load the guard point (after a stall: the run's start, which then remembers the halved
        lr) and return the hyperparameters to run with: half the smaller lr (inner/guard.py)."""
        if stall:
            self.point = self.start
        point, self._spare, self.offered = self.point, self.offered, None
        restore(point["state"], *parts)
        hparams = guarded_hparams(hparams, HParams(**point["hparams"]))
        if stall:
            self.start = self.point = {**point, "hparams": hparams.as_dict()}
        self.returns += 1
        return hparams

    # --- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The guard's part of Controller.state_dict() (copies: later points are written into
        these tensors in place)."""
        return {"point": clone_tree(self.point), "offered": clone_tree(self.offered),
                "start": None if self.start is self.point else clone_tree(self.start),
                "returns": self.returns, "first_loss": self.first_loss, "initial_valid": self.initial_valid,
                "first_train": list(self.first_train), "latest_train": list(self.latest_train)}

    def load_state_dict(self, saved: dict) -> None:
        """Read `saved` (state_dict()'s dict; a state from before the stall rule read training
        losses has none: the validation loss alone decides). Raises ValueError (non-finite or
        too many training losses) or KeyError/TypeError (a malformed dict) before anything changes."""
        first_train = [float(v) for v in saved.get("first_train", [])]
        latest_train = deque((float(v) for v in saved.get("latest_train", [])), maxlen=START_STEPS)
        if not all(math.isfinite(v) for v in first_train + list(latest_train)) or len(first_train) > START_STEPS:
            raise ValueError("its guard's training losses are not finite, or too many")
        returns = int(saved["returns"])
        self.point, self.offered, self.returns = saved["point"], saved["offered"], returns
        self.start = saved["point"] if saved.get("start") is None else saved["start"]
        self.first_loss, self.initial_valid = saved.get("first_loss"), saved.get("initial_valid")
        self.first_train, self.latest_train, self._spare = first_train, latest_train, None
