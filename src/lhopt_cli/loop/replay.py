"""ReplaySchedule: a schedule file (schedule_file.py) played back on any AdamW, torch-style.

    replay = ReplaySchedule(optimizer, "schedule_char_lm_s0.json", total_steps)
    for batch in loader:
        loss = model(batch).mean(); loss.backward()
        replay.clip_gradients()      # the file's clip fraction x the rolling max of the gradient norm
        optimizer.step(); optimizer.zero_grad()
        replay.step()                # after optimizer.step(), as torch's lr schedulers

No policy runs: the schedule a policy produced on a small model costs nothing on a large one (the
paper's Figure 2 regime). The run may be of any length: step k reads the file at progress
k / total_steps. Param groups keep the ratios they had at construction (a group at weight decay 0
stays 0). Restarts are not replayed: a schedule sets hyperparameters, never weights.
"""
from __future__ import annotations

import math
import operator
from pathlib import Path

import torch

from lhopt_cli.inner.hooks import Hook
from lhopt_cli.inner.optim import (ADAMW_KEYS, HParams, RollingMaxClipper, apply_hparams, check_runnable, group_hparams,
                                  group_scales, refuse_coupled_decay)
from lhopt_cli.loop.schedule_file import KEYS, check_schedule, hparams_at, read_schedule


MAX_RATIO = 1e6  # a param group's ratio to the first: far above any real one (10x heads, 0 for no decay)


class ReplaySchedule:
    """Sets `optimizer`'s lr, betas, eps and weight decay for each of `total_steps` steps from a
    schedule file (a path, or the dict `read_schedule` returns).

    Raises ScheduleFileError (a ValueError) for a file or dict that is not a valid schedule,
    ValueError for a total_steps that is not a positive integer or an optimizer whose lr is 0 in
    every group, TypeError for an optimizer without AdamW's keys."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: str | Path | dict, total_steps: int):
        given = total_steps
        try:  # any integer type (numpy's too), not a bool or a float
            total_steps = operator.index(total_steps) if not isinstance(total_steps, bool) else 0
        except TypeError:
            total_steps = 0
        if total_steps < 1:
            raise ValueError(f"total_steps must be a positive integer (got {given!r})")
        if not optimizer.param_groups or any(k not in g for g in optimizer.param_groups for k in ADAMW_KEYS):
            raise TypeError(f"{type(optimizer).__name__} is not AdamW-like: a replay sets lr, betas, eps and "
                            "weight_decay in its param groups")
        refuse_coupled_decay(optimizer)
        if all(float(group["lr"]) == 0.0 for group in optimizer.param_groups):
            raise ValueError("the optimizer's learning rate is 0 in every param group: a replay keeps each group's "
                             "ratio to the first, so give AdamW its base lr (the schedule sets the value)")
        self.schedule = check_schedule(schedule, "given as a dict") if isinstance(schedule, dict) else read_schedule(schedule)
        self.optimizer, self.total_steps = optimizer, total_steps
        _, self.group_scales = group_scales(optimizer)  # each group's ratio to the first: kept
        self.clipper = RollingMaxClipper()
        self.step_index = 0
        self._apply()

    @property
    def hparams(self):
        """The hyperparameters of the current step (the first group's; lr after the decay)."""
        return hparams_at(self.schedule, min(self.step_index, self.total_steps - 1), self.total_steps)

    def _apply(self) -> None:
        apply_hparams(self.optimizer, self.hparams, self.group_scales)

    def seek(self, step: int) -> None:
        """Set the hyperparameters of update `step` (0-based): for loops that count steps
        themselves (a framework's global step), in place of calling step() after each update.
        Raises ValueError outside [0, total_steps)."""
        if not 0 <= int(step) < self.total_steps:
            raise ValueError(f"step {step} is outside the replay's 0 .. {self.total_steps - 1}")
        self.step_index = int(step)
        self._apply()

    def clip_gradients(self) -> float:
        """Clip the optimizer's gradients at the schedule's clip fraction x the rolling max of the
        global gradient norm (as the policy's runs clip); call between backward() and
        optimizer.step(). Returns the norm before clipping."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        norm, _ = self.clipper(params, self.hparams.clip)
        return norm

    def step(self) -> None:
        """Advance to the next step and set its hyperparameters (call after optimizer.step()).
        Raises RuntimeError past total_steps."""
        if self.step_index >= self.total_steps:
            raise RuntimeError(f"step() called more than total_steps={self.total_steps} times")
        self.step_index += 1
        if self.step_index < self.total_steps:
            self._apply()

    def state_dict(self) -> dict:
        """The step, the clipper's rolling max and the groups' ratios (save with the optimizer's)."""
        return {"step_index": self.step_index, "total_steps": self.total_steps,
                "clipper": self.clipper.state_dict(), "group_scales": [dict(g) for g in self.group_scales]}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`. Raises ValueError for a state of a run of another length,
        of another number of param groups, or with values no run can use, checked whole before
        anything changes."""
        try:
            total, step = int(state["total_steps"]), state["step_index"]
            scales = [{str(k): float(v) for k, v in g.items()} for g in state["group_scales"]]
            rolling = float(state["clipper"]["rolling_max"])
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
            raise ValueError(f"not a ReplaySchedule state ({type(err).__name__}); nothing was changed") from None
        if total != self.total_steps:
            raise ValueError(f"the saved replay had total_steps={total}, this one {self.total_steps}")
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= total:
            raise ValueError(f"its step {step!r} is not a step of the run's 0..{total}; nothing was changed")
        if len(scales) != len(self.optimizer.param_groups):
            raise ValueError(f"{len(scales)} param groups saved, the optimizer has {len(self.optimizer.param_groups)}; "
                             "nothing was changed")
        if any(set(g) != set(self.group_scales[0]) or not all(math.isfinite(v) and 0 <= v <= MAX_RATIO for v in g.values())
               for g in scales) or not (math.isfinite(rolling) and rolling >= 0):
            raise ValueError("its group ratios or clipping state are not finite non-negative numbers of a replay's "
                             "keys; nothing was changed")
        for point in self.schedule["points"]:  # what each group would run with at every point
            for i, ratio in enumerate(scales):
                applied = group_hparams(HParams(**{k: float(point[k]) for k in KEYS}), ratio).as_dict()
                try:
                    check_runnable({**applied, "lr": applied["lr"] or 1.0, "eps": applied["eps"] or 1e-8},
                                   f"its param group {i}'s ")
                except ValueError as err:
                    raise ValueError(f"{err}; nothing was changed") from None
        self.step_index = step
        self.clipper.load_state_dict({"rolling_max": rolling})
        self.group_scales = scales
        if self.step_index < self.total_steps:
            self._apply()


class ReplayHook(Hook):
    """The engine's form of a replay (`lhopt evaluate replay=FILE`): each step's hyperparameters,
    the clip fraction included, from the schedule at the step's progress."""

    def __init__(self, schedule: dict):
        self.schedule = schedule

    def before_step(self, run) -> None:
        run.hparams = hparams_at(self.schedule, run.step, run.total_steps)
