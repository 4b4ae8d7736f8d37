"""The range of every number a command's config holds, in one table, checked before anything runs.

The schemas (schemas.py) give each key its type; VALUE_RANGES gives each numeric key the values a
run can use, so `lhopt <command> key=value` with anything else is refused in one line naming the
key, its range and the value. A list (seeds, grid.lrs, controller.decisions) is checked element
by element. Task keys have their own table (tasks/limits.py). A test checks that every numeric
key of every command's schema is listed here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


@dataclass(frozen=True)
class Range:
    """low <= value (< or <=) high; `closed_low`/`closed_high`: whether the bound is a value."""
    low: float
    high: float = math.inf
    closed_low: bool = True
    closed_high: bool = False

    def holds(self, value: float) -> bool:
        if math.isnan(value):
            return False
        above = value >= self.low if self.closed_low else value > self.low
        below = value <= self.high if self.closed_high else value < self.high
        return above and below

    def describe(self) -> str:
        """The rule as the refusal says it: "be at least 1", "lie in [0, 1)", ..."""
        if self.high == math.inf and self.low == -math.inf:
            return "be finite"
        if self.high == math.inf and self.closed_low:
            return f"be at least {self.low:g}"
        if self.high == math.inf:
            return "be positive and finite" if self.low == 0 else f"be above {self.low:g} and finite"
        high = "2^32" if self.high == SEED_LIMIT else f"{self.high:g}"
        return f"lie in {'[' if self.closed_low else '('}{self.low:g}, {high}{']' if self.closed_high else ')'}"


SEED_LIMIT = 2**32  # numpy's and scikit-learn's seeds; the data order's seed (10007 s + 17) stays an int64
AT_LEAST_0, AT_LEAST_1, POSITIVE = Range(0), Range(1), Range(0, closed_low=False)
FINITE = Range(-math.inf, math.inf, closed_low=False)
UNIT, SEED = Range(0, 1, closed_high=True), Range(0, SEED_LIMIT)
LR = POSITIVE

VALUE_RANGES: dict[str, Range] = {
    # a suite's records first: evaluate's own keys take their values from them
    "suite.extended_lrs": LR, "suite.fixed_default.lr": LR,
    # every command
    "seed": SEED, "seeds": SEED, "validation.seeds": SEED, "chunk": AT_LEAST_0, "chunks": AT_LEAST_1,
    "executor.workers": AT_LEAST_0, "executor.members": AT_LEAST_1, "executor.num_cpus": AT_LEAST_1,
    "executor.max_restarts": AT_LEAST_0,
    # the grid's AdamW settings: what torch's AdamW can run with
    "grid.lrs": LR, "grid.extended_lrs": LR, "extended_lrs": LR, "fixed_default.lr": LR,
    "grid.beta1": Range(0, 1), "grid.beta2": Range(0, 1), "grid.eps": Range(0, 1, False, True),
    "grid.weight_decay": UNIT, "grid.clip_fraction": Range(0, 1, False, True),
    # scaling-fit
    "bootstrap": Range(10, 100_000, closed_high=True), "target.flops": POSITIVE, "target.params": POSITIVE,
    # the controller and its observation protocol
    "controller.hidden": AT_LEAST_1, "controller.decisions": AT_LEAST_1, "controller.eval_decisions": AT_LEAST_1,
    "controller.eval_points": AT_LEAST_1, "controller.min_interval": AT_LEAST_1, "controller.stats_every": AT_LEAST_1,
    "controller.obs_clip": POSITIVE, "controller.noop_logit": FINITE, "controller.restart_none_logit": FINITE,
    "protocol.decisions": AT_LEAST_1, "protocol.eval_points": AT_LEAST_1, "protocol.min_interval": AT_LEAST_1,
    "protocol.stats_every": AT_LEAST_1,
    # meta-training
    "envs": AT_LEAST_1, "workers": AT_LEAST_1, "checkpoint_every": AT_LEAST_1, "validation.every": AT_LEAST_0,
    "reward_extrapolation": Range(1), "reward.sweep_lrs": LR,
    "ppo.iterations": AT_LEAST_1, "ppo.learning_rate": POSITIVE, "ppo.gamma": UNIT, "ppo.gae_lambda": UNIT,
    "ppo.minibatch_size": AT_LEAST_1, "ppo.minibatch_episodes": AT_LEAST_1, "ppo.update_epochs": AT_LEAST_1,
    "ppo.clip_coef": Range(0, 1, False, True), "ppo.ent_coef": AT_LEAST_0, "ppo.vf_coef": AT_LEAST_0,
    "ppo.max_grad_norm": POSITIVE, "ppo.target_kl": POSITIVE, "ppo.polyak": Range(0, 1), "ppo.anchor_coef": AT_LEAST_0,
    "ppo.imitation_coef": AT_LEAST_0,
    # debug=smoke's sizes
    "debug.max_steps": AT_LEAST_1, "debug.eval_points": AT_LEAST_1, "debug.valid_size": AT_LEAST_1,
    "debug.iterations": AT_LEAST_1, "debug.envs": AT_LEAST_1, "debug.decisions": AT_LEAST_1,
    "debug.validation_every": AT_LEAST_0, "debug.pretrain_steps": AT_LEAST_0,
}


# Lists whose values each name a run: the same value twice would run (or count) it twice
LISTS_OF_DISTINCT = ("seeds", "validation.seeds", "grid.lrs", "grid.extended_lrs", "extended_lrs", "reward.sweep_lrs")


class RangeError(ValueError):
    """A config value outside its key's range (one line)."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def check_ranges(cfg: DictConfig) -> None:
    """RangeError (one line) for the first key of VALUE_RANGES whose value (or a list element) lies
    outside its range; keys the config lacks, or set to null, are skipped."""
    for key, allowed in VALUE_RANGES.items():
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        values = list(value) if isinstance(value, (ListConfig, list, tuple)) else [value]
        for item in values:
            number = _number(item)
            if number is not None and not allowed.holds(number):
                shown = item if isinstance(item, int) else f"{number:g}"
                raise RangeError(f"{key} must {allowed.describe()} (got {shown})")
        if key in LISTS_OF_DISTINCT and len(values) != len(set(map(str, values))):
            twice = next(v for v in values if values.count(v) > 1)
            raise RangeError(f"{key} lists {twice} twice; give each once")
