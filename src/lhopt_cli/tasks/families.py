"""Task families for meta-training (docs/method.md section 7): sample a task config, then build it.

A family lists kinds of task with a weight and the ranges to sample: a [low, high] pair of
numbers is sampled log-uniformly (integers rounded), a list of strings uniformly, a scalar is
fixed. Sampling is separate from building, so a sampled config can be logged and rebuilt.
A family-level `param_scale` range (scale augmentation, tasks/rescale.py) gives every sampled
instance its own scale s, which moves its best learning rate by 1/s.
A kind that offers fine-tuning (tasks/pretrain.py) may list `pretrain_steps` (a range) with
`pretrain_share` (default 1): that share of its instances starts from weights pretrained for the
sampled number of steps, the rest from a fresh initialisation (`pretrain_steps` 0).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from lhopt_cli.tasks import KINDS

DEPTH_KEYS = {"mlp_mnist", "mlp_digits", "mnist_autoencoder", "synthetic_tabular", "friedman_regression", "lorenz_forecast"}


class FamilyError(ValueError):
    pass


# w = s * w' keeps float32 weights normal and lr / s above AdamW's eps only within these scales
PARAM_SCALE_RANGE = (1e-6, 1e6)


def _sample_value(rng: np.random.Generator, spec: Any) -> Any:
    if isinstance(spec, (list, tuple)) and len(spec) == 2 and all(isinstance(v, (int, float)) for v in spec):
        low, high = float(spec[0]), float(spec[1])
        value = math.exp(rng.uniform(math.log(low), math.log(high))) if low > 0 else rng.uniform(low, high)
        return int(round(value)) if all(isinstance(v, int) for v in spec) else float(value)
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(v, str) for v in spec):
        return str(spec[int(rng.integers(len(spec)))])
    return spec


def check_family_shape(cfg: dict) -> None:
    """FamilyError (one line) unless `kinds` maps kind names to mappings of parameters, none of them
    `name` (a sampled config's name picks the task built: a kind is named by its key alone)."""
    if not isinstance(cfg.get("kinds"), dict):
        raise FamilyError(f"task_family.kinds must map kind names to their ranges (got {cfg.get('kinds')!r})")
    for kind, spec in cfg["kinds"].items():
        if not isinstance(spec, dict):
            raise FamilyError(f"task_family.kinds.{kind} must map parameters to ranges (got {spec!r})")
        if "name" in spec:
            raise FamilyError(f"task_family.kinds.{kind}.name: a kind is named by its key; drop `name`")


class TaskFamily:
    def __init__(self, cfg: dict):
        check_family_shape(cfg)
        kinds = {k: dict(v) for k, v in cfg["kinds"].items()}
        excluded = set(cfg.get("exclude") or [])
        unknown = [k for k in list(kinds) + list(excluded) if k not in KINDS]
        if unknown:
            raise FamilyError(f"task_family: unknown task kind '{unknown[0]}'; known: {', '.join(sorted(KINDS))}")
        self.kinds = {k: v for k, v in kinds.items() if k not in excluded and float(v.get("weight", 1.0)) > 0}
        if not self.kinds:
            raise FamilyError("task_family: no task kind left to sample (all excluded or weight 0)")
        for kind, spec in self.kinds.items():
            share = spec.get("pretrain_share", 1.0)
            if not isinstance(share, (int, float)) or not 0 <= share <= 1:
                raise FamilyError(f"task_family.kinds.{kind}.pretrain_share must be a number in [0, 1] (got {share!r})")
            if "pretrain_share" in spec and "pretrain_steps" not in spec:
                raise FamilyError(f"task_family.kinds.{kind}.pretrain_share needs a pretrain_steps range beside it")
        self.names = sorted(self.kinds)
        weights = np.array([float(self.kinds[k].get("weight", 1.0)) for k in self.names])
        self.probs = weights / weights.sum()
        self.eval_points = int(cfg.get("eval_points", 14))
        self.max_steps = cfg.get("max_steps")  # a cap on every sampled task's steps (debug=smoke)
        self.param_scale = cfg.get("param_scale")  # null, a number, or a [low, high] log-uniform range
        if self.param_scale is not None:
            ranged = isinstance(self.param_scale, (list, tuple))
            bounds = self.param_scale if ranged else [self.param_scale]
            if ((ranged and len(bounds) != 2) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                          and PARAM_SCALE_RANGE[0] <= v <= PARAM_SCALE_RANGE[1]
                                                          for v in bounds)
                    or (ranged and bounds[0] > bounds[1])):
                raise FamilyError(f"task_family.param_scale must be null, a positive number or a [low, high] range "
                                  f"of positive numbers (low <= high, within {PARAM_SCALE_RANGE[0]:g} to "
                                  f"{PARAM_SCALE_RANGE[1]:g}; got {self.param_scale!r})")

    def sample(self, rng: np.random.Generator) -> dict:
        """A task config (as conf/task/ would give) drawn from the family."""
        name = self.names[int(rng.choice(len(self.names), p=self.probs))]
        spec = {k: v for k, v in self.kinds[name].items() if k not in ("weight", "pretrain_share")}
        cfg: dict[str, Any] = {"name": name, "eval_points": self.eval_points, "max_steps": self.max_steps,
                               "valid_size": None}
        depth = width = None
        for key, value in spec.items():
            if key == "depth":
                depth = _sample_value(rng, value)
            elif key == "width":
                width = value
            elif key == "pretrain_steps":  # a share of instances fine-tunes, the rest start fresh
                share = float(self.kinds[name].get("pretrain_share", 1.0))
                cfg[key] = _sample_value(rng, value) if rng.uniform() < share else 0
            else:
                cfg[key] = _sample_value(rng, value)
        if name in DEPTH_KEYS and depth is not None:
            cfg["hidden"] = [_sample_value(rng, width or [16, 128]) for _ in range(int(depth))]
        if name == "mnist1d_conv" and "channels" in cfg:
            cfg["channels"] = [int(cfg["channels"])] * 2
        if name == "cnn_mnist" and "channels" in cfg:
            cfg["channels"] = [int(cfg["channels"]), 2 * int(cfg["channels"])]
        if self.param_scale is not None:  # drawn last: families without it sample as before
            cfg["param_scale"] = float(_sample_value(rng, [float(v) for v in self.param_scale])
                                       if isinstance(self.param_scale, (list, tuple)) else self.param_scale)
        return cfg

    def task_index(self, name: str) -> int:
        return self.names.index(name)
