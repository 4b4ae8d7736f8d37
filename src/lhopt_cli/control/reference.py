"""The tuned reference a meta-training episode is rewarded against: a small AdamW sweep.

The best of the 35-run grid is 2x to 100x faster than AdamW at its defaults, so a reward over
the defaults says little about the goal (beating the tuned grid). Per task instance and seed
the sweep runs `lrs` x `schedules` (the grid's schedules, AdamW's other hyperparameters at the
grid's values), all members in one batched run with the episode's seed (same initialisation and
data order as the policy's runs); its validation curves are cached per (instance, seed).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from lhopt_cli.inner import HParams
from lhopt_cli.inner.batched import train_batched
from lhopt_cli.inner.schedules import SCHEDULES, ScheduleHook
from lhopt_cli.tasks import Task

DEFAULT_LRS = (1e-3, 3e-3, 1e-2, 3e-2)
DEFAULT_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class ReferenceSweep:
    """`lrs` (peak learning rates) x `schedules` (inner/schedules.py names) of AdamW."""

    lrs: tuple[float, ...] = DEFAULT_LRS
    schedules: tuple[str, ...] = DEFAULT_SCHEDULES

    def __post_init__(self):
        if not self.lrs or not self.schedules:
            raise ValueError("the reference sweep needs at least one learning rate and one schedule")
        bad = [lr for lr in self.lrs if not (0 < float(lr) < float("inf"))]
        if bad:
            raise ValueError(f"reference sweep: learning rates must be positive and finite (got {bad[0]})")
        unknown = [s for s in self.schedules if s not in SCHEDULES]
        if unknown:
            raise ValueError(f"reference sweep: unknown schedule '{unknown[0]}'; known: {', '.join(SCHEDULES)}")

    @property
    def size(self) -> int:
        return len(self.lrs) * len(self.schedules)

    def curves(self, task: Task, seed: int) -> tuple[list[int], list[list[float]]]:
        """(validation steps (P,), one validation-loss curve per sweep member); a curve that
        diverged is shorter than the steps. On a rescaled instance (`param_scale` s) the sweep
        runs at lr / s: the same tuned reference, measured in the network's own weights."""
        scale = float(task.cfg.get("param_scale") or 1.0)
        settings = [(float(lr) / scale, s) for lr in self.lrs for s in self.schedules]
        hooks = [ScheduleHook(s, HParams(lr=lr)) for lr, s in settings]
        results = train_batched(task, [seed] * len(settings), hooks, [HParams(lr=lr) for lr, _ in settings])
        steps = [0, *task.eval_steps()]
        return steps, [curve_on(steps, r.curve) for r in results]


def best_setting(sweep: ReferenceSweep, task: Task, curves: list[list[float]]) -> tuple[float, str]:
    """The sweep member with the lowest final validation loss on this instance and seed: (its lr as
    the run used it, i.e. divided by the instance's `param_scale`, its schedule). A diverged member
    (inf) never wins; raises ValueError if every member diverged."""
    scale = float(task.cfg.get("param_scale") or 1.0)
    settings = [(float(lr) / scale, s) for lr in sweep.lrs for s in sweep.schedules]
    finals = [curve[-1] if curve else float("inf") for curve in curves]
    best = min(range(len(finals)), key=lambda i: finals[i])
    if finals[best] == float("inf"):
        raise ValueError("every member of the reference sweep diverged")
    return settings[best]


def curve_on(steps: list[int], rows: list[dict]) -> list[float]:
    """A run's validation losses at `steps` (P,) from its curve rows; inf where it has none (after
    it diverged: a diverging run's last row may sit between validation steps)."""
    by_step = {int(row["step"]): float(row["valid_loss"]) for row in rows}
    return [by_step.get(int(step), float("inf")) for step in steps]


class ReferenceCache:
    """Sweep curves per (task instance, seed), computed on first use; `seconds` is the time spent."""

    def __init__(self, sweep: ReferenceSweep, size: int = 8):
        self.sweep, self.size = sweep, size
        self._curves: dict[str, tuple[list[int], list[list[float]]]] = {}
        self.seconds = 0.0

    def get(self, instance: dict, task: Task, seed: int) -> tuple[list[int], list[list[float]]]:
        key = json.dumps([instance, int(seed)], sort_keys=True)
        if key not in self._curves:
            start = time.perf_counter()
            if len(self._curves) >= self.size:  # instances are rarely revisited: keep the latest few
                self._curves.pop(next(iter(self._curves)))
            self._curves[key] = self.sweep.curves(task, seed)
            self.seconds += time.perf_counter() - start
        return self._curves[key]
