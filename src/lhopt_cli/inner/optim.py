"""Hyperparameters in and out of AdamW's param_groups, and clipping by a rolling max norm."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable

import torch

HPARAM_NAMES = ("lr", "beta1", "beta2", "eps", "weight_decay", "clip")


@dataclass
class HParams:
    """AdamW's controlled hyperparameters plus the clip fraction c (docs/method.md section 2).

    The clip threshold is c x the rolling max of the global gradient norm; c = 1 never clips.
    """

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 1e-2
    clip: float = 1.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def make_adamw(params: Iterable[torch.nn.Parameter], hp: HParams) -> torch.optim.AdamW:
    """torch's AdamW at `hp`; the fused kernel where this build has one (it is the fastest)."""
    params = list(params)
    kwargs = dict(lr=hp.lr, betas=(hp.beta1, hp.beta2), eps=hp.eps, weight_decay=hp.weight_decay)
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, **kwargs)


GROUP_KEYS = ("lr", "one_minus_beta1", "one_minus_beta2", "eps", "weight_decay")
ADAMW_KEYS = ("lr", "betas", "eps", "weight_decay")  # what an AdamW-like optimizer's param groups hold


def _group_values(group: dict) -> dict[str, float]:
    beta1, beta2 = group["betas"]
    return {"lr": float(group["lr"]), "one_minus_beta1": 1.0 - float(beta1), "one_minus_beta2": 1.0 - float(beta2),
            "eps": float(group["eps"]), "weight_decay": float(group["weight_decay"])}


def group_scales(optimizer: torch.optim.Optimizer, clip: float = 1.0) -> tuple[HParams, list[dict[str, float]]]:
    """The reference hyperparameters of an optimizer whose param groups may differ, and each
    group's ratio to them: per key the reference is the first group's non-zero value, so a group
    at 0 (weight decay off for biases and norms) has ratio 0 and stays 0 under relative changes.
    Returns (reference HParams, one {key: ratio} per param group; keys GROUP_KEYS)."""
    values = [_group_values(group) for group in optimizer.param_groups]
    reference = {k: next((v[k] for v in values if v[k] != 0), 0.0) for k in GROUP_KEYS}
    scales = [{k: (v[k] / reference[k] if reference[k] else 0.0) for k in GROUP_KEYS} for v in values]
    hp = HParams(reference["lr"], 1.0 - reference["one_minus_beta1"], 1.0 - reference["one_minus_beta2"],
                 reference["eps"], reference["weight_decay"], clip)
    return hp, scales


def group_hparams(hp: HParams, ratio: dict[str, float]) -> HParams:
    """The values a param group runs with: each of `hp` times the group's ratio (group_scales;
    betas: 1 - beta scaled)."""
    return HParams(hp.lr * ratio["lr"], 1.0 - (1.0 - hp.beta1) * ratio["one_minus_beta1"],
                   1.0 - (1.0 - hp.beta2) * ratio["one_minus_beta2"], hp.eps * ratio["eps"],
                   hp.weight_decay * ratio["weight_decay"], hp.clip)


# The values AdamW can run with, checked where they come from a file or a saved state: (low, high,
# low included). Far above the policy's own bounds (control/actions.py), far below overflow.
RUNNABLE = {"lr": (0, 10.0, False), "beta1": (0, 1, True), "beta2": (0, 1, True), "eps": (0, 1.0, False),
            "weight_decay": (0, 10.0, True), "clip": (0, math.inf, False)}


def check_runnable(values: dict, where: str = "") -> None:
    """ValueError ('{where}{name} {value} is not one AdamW can run with') unless every value of
    `values` (HParams fields) lies in RUNNABLE (beta1 and beta2 below 1)."""
    for name, (low, high, closed) in RUNNABLE.items():
        value = float(values.get(name, 1.0))
        inside = value < high if name in ("beta1", "beta2") else value <= high
        if not (math.isfinite(value) and (value >= low if closed else value > low) and inside):
            raise ValueError(f"{where}{name} {value:g} is not one AdamW can run with")


def apply_hparams(optimizer: torch.optim.Optimizer, hp: HParams, scales: list[dict[str, float]] | None = None) -> None:
    """Write the hyperparameters into every param group (read by the next optimizer.step); with
    `scales` (group_scales), group i gets each value times its ratio (group_hparams)."""
    for i, group in enumerate(optimizer.param_groups):
        values = group_hparams(hp, scales[i] if scales is not None else dict.fromkeys(GROUP_KEYS, 1.0))
        if torch.is_tensor(group["lr"]):  # a tensor lr (fused or capturable AdamW) stays the same tensor
            group["lr"].fill_(values.lr)
        else:
            group["lr"] = values.lr
        group["betas"] = (values.beta1, values.beta2)
        group["eps"] = values.eps
        group["weight_decay"] = values.weight_decay


def read_hparams(optimizer: torch.optim.Optimizer, clip: float = 1.0) -> HParams:
    """The hyperparameters of the first param group (AdamW-family optimizers); a value the group
    does not hold (DoG has no betas) reads as NaN."""
    group = optimizer.param_groups[0]
    beta1, beta2 = group.get("betas", (math.nan, math.nan))
    return HParams(float(group["lr"]), float(beta1), float(beta2), float(group.get("eps", math.nan)),
                   float(group.get("weight_decay", math.nan)), clip)


class RollingMaxClipper:
    """Clip the global gradient norm at c x its rolling max (the max decays 0.99 per step)."""

    def __init__(self, decay: float = 0.99):
        self.decay = decay
        self.rolling_max = 0.0

    @staticmethod
    def grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor | None:
        """The global gradient norm of `params` (None: no gradients)."""
        with_grad = [p for p in params if p.grad is not None]
        return torch.nn.utils.get_total_norm([p.grad for p in with_grad]) if with_grad else None

    def __call__(self, params: list[torch.nn.Parameter], fraction: float,
                 norm: torch.Tensor | None = None, value: float | None = None) -> tuple[float, bool]:
        """Clip at fraction x the rolling max; `norm`: the gradient norm if already computed
        (a tensor), `value`: that norm on the host if already read (no second transfer).
        Returns (the norm before clipping, whether it clipped)."""
        with_grad = [p for p in params if p.grad is not None]
        if not with_grad:
            return 0.0, False
        norm = torch.nn.utils.get_total_norm([p.grad for p in with_grad]) if norm is None else norm
        value = float(norm) if value is None else value
        if math.isfinite(value):
            self.rolling_max = max(self.decay * self.rolling_max, value)
        threshold = fraction * self.rolling_max
        clipped = fraction < 1.0 and value > threshold
        if clipped:
            torch.nn.utils.clip_grads_with_norm_(with_grad, threshold, norm)  # scales each p.grad
        return value, clipped

    def state_dict(self) -> dict[str, float]:
        return {"rolling_max": self.rolling_max}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.rolling_max = float(state["rolling_max"])


def refuse_coupled_decay(optimizer: torch.optim.Optimizer) -> None:
    """TypeError for torch's Adam, NAdam, RAdam or Adamax without decoupled weight decay: their
    weight decay is an L2 term on the gradient, not AdamW's decoupled decay that policies and
    schedule files were made with."""
    coupled = (torch.optim.Adam, torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adamax)
    if (isinstance(optimizer, coupled) and not isinstance(optimizer, torch.optim.AdamW)
            and not all(group.get("decoupled_weight_decay", False) for group in optimizer.param_groups)):
        raise TypeError(f"{type(optimizer).__name__}'s weight decay is an L2 term on the gradient, not AdamW's "
                        "decoupled decay that lhopt's policies and schedule files are made for: use torch.optim.AdamW")
