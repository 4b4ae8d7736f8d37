"""AdamW whose learning rate follows its hypergradient (a comparator that needs no tuning).

Baydin et al. 2018, "Online Learning Rate Adaptation with Hypergradient Descent" (ICLR), section
2 and Algorithm 3 (Adam-HD): the update of step t-1 moved the weights by -lr * u_{t-1}, so the
loss's derivative with respect to that lr is h_t = -grad_t . u_{t-1}, and gradient descent on it
gives

    lr_t = lr_{t-1} - beta * h_t = lr_{t-1} + beta * grad_t . u_{t-1}

before the usual step at lr_t. Here u is AdamW's whole update per unit lr (the Adam direction and
the decoupled weight decay), read off the weights' change, summed over every parameter. The
paper's value beta = 1e-7 for Adam-HD is the default; the initial lr is AdamW's default 1e-3.
"""
from __future__ import annotations

import torch

HYPERGRADIENT_LR = 1e-7  # the paper's beta for Adam-HD (section 5)


class HypergradientAdamW(torch.optim.AdamW):
    """torch's AdamW with Adam-HD's lr update before every step (one lr per param group).

    `hypergradient_lr` is beta; other arguments are AdamW's. The lr may become negative if the
    hypergradient says so, as in the paper's algorithm (nothing clamps it); with `maximize` the lr
    climbs the objective. A `closure` is evaluated first, as torch's optimizers do. Raises
    ValueError for a beta that is not finite and >= 0."""

    def __init__(self, params, lr: float = 1e-3, hypergradient_lr: float = HYPERGRADIENT_LR, **kwargs):
        if not (0 <= hypergradient_lr < float("inf")):
            raise ValueError(f"hypergradient_lr must be a finite number >= 0 (got {hypergradient_lr})")
        self.hypergradient_lr = hypergradient_lr
        super().__init__(params, lr=lr, **kwargs)
        for group in self.param_groups:
            group["hypergradient_lr"] = hypergradient_lr

    def load_state_dict(self, state_dict: dict) -> None:
        """AdamW's load; a state saved by plain AdamW gets this optimizer's hypergradient_lr."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group.setdefault("hypergradient_lr", self.hypergradient_lr)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # the gradient of this step first: the hypergradient reads it
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            with_grad = [p for p in group["params"] if p.grad is not None and "hd_direction" in self.state[p]]
            if with_grad:  # grad_t . u_{t-1}: how the last step's lr moved this loss
                dot = sum(torch.sum(p.grad * self.state[p]["hd_direction"]) for p in with_grad)
                ascent = -1.0 if group.get("maximize", False) else 1.0  # maximising: climb the objective
                group["lr"] = group["lr"] + ascent * group["hypergradient_lr"] * float(dot)
        before = {p: p.detach().clone() for group in self.param_groups for p in group["params"] if p.grad is not None}
        super().step()
        for group in self.param_groups:
            for p in group["params"]:
                if p in before and group["lr"] != 0:
                    self.state[p]["hd_direction"] = (before[p] - p) / group["lr"]  # u_t: the step per unit lr
        return loss
