"""Relative actions (docs/method.md section 2): one categorical head per hyperparameter, plus restarts.

Every choice multiplies (or, for the clip fraction, shifts in logit space) the current value,
and the result is clipped to the hyperparameter's bounds. lr, eps and weight decay act on the
value itself; the betas act on 1 - beta.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from lhopt_cli.inner.optim import HParams

REGISTERS = 3
# head name -> choices; the restart head is none, save to register k, load from register k
HEADS: dict[str, tuple[float, ...]] = {
    "lr": (0.5, 0.707, 0.9, 1.0, 1.1, 1.414, 2.0),
    "one_minus_beta1": (0.5, 1.0, 2.0),
    "one_minus_beta2": (0.5, 1.0, 2.0),
    "eps": (0.5, 1.0, 2.0),
    "weight_decay": (0.5, 1.0, 2.0),
    "clip_logit": (-1.0, -0.3, 0.0, 0.3, 1.0),
    "restart": tuple(range(1 + 2 * REGISTERS)),
}
HEAD_NAMES = tuple(HEADS)
NVEC = tuple(len(choices) for choices in HEADS.values())
NO_OP = tuple(choices.index(0.0 if name == "clip_logit" else 1.0) if name != "restart" else 0
              for name, choices in HEADS.items())
BOUNDS = {
    "lr": (1e-8, 1.0),
    "one_minus_beta1": (1e-5, 1.0),
    "one_minus_beta2": (1e-5, 0.1),
    "eps": (1e-10, 1.0),
    "weight_decay": (1e-8, 1.0),
}
CLIP_BOUNDS = (1e-4, 1.0 - 1e-4)  # the clip fraction stays inside (0, 1)


def prior_logits(noop: float, restart_none: float) -> list[float]:
    """Initial logits of the policy's heads: `noop` on each head's no-op choice (`restart_none` on
    the restart head's none), 0 elsewhere. An untrained policy then mostly keeps AdamW's defaults
    instead of random-walking the hyperparameters and reloading checkpoints at most decisions."""
    logits: list[float] = []
    for name, choices in HEADS.items():
        head = [0.0] * len(choices)
        head[NO_OP[HEAD_NAMES.index(name)]] = restart_none if name == "restart" else noop
        logits.extend(head)
    return logits


def logit(p: float) -> float:
    p = min(max(p, CLIP_BOUNDS[0]), CLIP_BOUNDS[1])  # c = 1 (never clip) maps to the bound
    return math.log(p / (1.0 - p))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _clip(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def _scaled(value: float, factor: float, bounds: tuple[float, float]) -> float:
    """value x factor within bounds; a zero (e.g. a user's weight decay 0) stays zero."""
    return 0.0 if value == 0 else _clip(value * factor, bounds)


def apply_action(hp: HParams, action) -> tuple[HParams, int]:
    """The hyperparameters after one action (one choice index per head), and the restart code."""
    pick = {name: HEADS[name][int(index)] for name, index in zip(HEAD_NAMES, action)}
    one_minus_b1 = _clip((1.0 - hp.beta1) * pick["one_minus_beta1"], BOUNDS["one_minus_beta1"])
    one_minus_b2 = _clip((1.0 - hp.beta2) * pick["one_minus_beta2"], BOUNDS["one_minus_beta2"])
    clip = hp.clip if pick["clip_logit"] == 0.0 else sigmoid(logit(_clip(hp.clip, CLIP_BOUNDS)) + pick["clip_logit"])
    new = replace(
        hp,
        lr=_scaled(hp.lr, pick["lr"], BOUNDS["lr"]),
        beta1=1.0 - one_minus_b1,
        beta2=1.0 - one_minus_b2,
        eps=_scaled(hp.eps, pick["eps"], BOUNDS["eps"]),
        weight_decay=_scaled(hp.weight_decay, pick["weight_decay"], BOUNDS["weight_decay"]),
        clip=_clip(clip, CLIP_BOUNDS),
    )
    return new, int(pick["restart"])


def lr_label(lr: float, target: float) -> int:
    """The lr head's choice (an index into HEADS["lr"]) that moves `lr` closest to `target` in log
    distance, after clipping to the bounds; of equally close choices, the first (so an lr at its
    bound keeps the no-op). The supervised label toward an instance's best learning rate.
    Raises ValueError for an lr or target that is not a positive number."""
    if not (lr > 0 and target > 0):
        raise ValueError(f"lr_label needs positive learning rates (got {lr}, {target})")
    distances = [abs(math.log(_scaled(lr, factor, BOUNDS["lr"]) / target)) for factor in HEADS["lr"]]
    return int(min(range(len(distances)), key=lambda i: (round(distances[i], 12), abs(math.log(HEADS["lr"][i])))))


def restart_kind(code: int) -> tuple[str, int]:
    """('none', -1), ('save', k) or ('load', k) for a restart head choice."""
    if code == 0:
        return "none", -1
    return ("save", code - 1) if code <= REGISTERS else ("load", code - 1 - REGISTERS)


# the start of an evaluation run: torch's AdamW defaults and the paper's clip fraction
EVAL_START = HParams(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, clip=0.8)


def randomized_start(rng: np.random.Generator, base: HParams = EVAL_START) -> HParams:
    """Meta-training starts: lr x logU[1e-2, 1e2], other scales x logU[0.1, 10], clip logit +U[-1, 1]."""
    def log_uniform(low: float, high: float) -> float:
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))

    return HParams(
        lr=_clip(base.lr * log_uniform(1e-2, 1e2), BOUNDS["lr"]),
        beta1=1.0 - _clip((1.0 - base.beta1) * log_uniform(0.1, 10), BOUNDS["one_minus_beta1"]),
        beta2=1.0 - _clip((1.0 - base.beta2) * log_uniform(0.1, 10), BOUNDS["one_minus_beta2"]),
        eps=_clip(base.eps * log_uniform(0.1, 10), BOUNDS["eps"]),
        weight_decay=_clip(base.weight_decay * log_uniform(0.1, 10), BOUNDS["weight_decay"]),
        clip=_clip(sigmoid(logit(base.clip) + rng.uniform(-1.0, 1.0)), CLIP_BOUNDS),
    )
