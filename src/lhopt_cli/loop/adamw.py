"""The shortest way to put a policy in a plain training loop: an AdamW that owns its Controller.

    opt = LhoptAdamW(net.parameters(), total_steps=T, model=net)
    for step in range(T):
        loss = loss_fn(net(x), y)
        loss.backward()
        valid = evaluate(net) if step in opt.validation_steps else None
        opt.step(loss=loss, valid_loss=valid)
        opt.zero_grad()

It is torch's AdamW with a Controller (controller.py) attached for `total_steps` steps: `step(loss=...)`
runs the controller first and takes the update only when the controller says so (not right after
a restart, not on an overflowed gradient), exactly as the Controller's own loop does. Its
`state_dict()` holds the controller's state beside AdamW's, so the usual checkpoint
(`torch.save(opt.state_dict(), ...)`, then `opt.load_state_dict(...)` on a new LhoptAdamW of the
same run) resumes with the decisions of the uninterrupted run.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from lhopt_cli.loop.controller import Controller


class LhoptAdamW(torch.optim.AdamW):
    """torch.optim.AdamW driven by an lhopt policy.

    Args:
        params: as AdamW's (parameters or param groups; groups keep their ratios).
        total_steps: the run's number of optimizer steps (a positive int).
        model: the module whose weights restarts and the divergence guard restore (None: the policy
            never restarts and the guard only halves the lr).
        policy: a policy file; None: the bundled default.
        lr, weight_decay: the start values (AdamW's defaults 1e-3 and 0.01); other AdamW keywords pass
            through. controller: Controller keywords (greedy, seed, guard).
    Raises what Controller.attach raises (ValueError for total_steps, ProtocolError) and
    PolicyFileError for an unreadable policy file. `controller` is the attached Controller
    (its `history`, `validation_steps`, `state_dict`, `write_schedule`).
    """

    def __init__(self, params, total_steps: int, model: torch.nn.Module | None = None,
                 policy: str | Path | None = None, lr: float = 1e-3, weight_decay: float = 0.01,
                 controller: dict | None = None, **adamw_kwargs):
        super().__init__(params, lr=lr, weight_decay=weight_decay, **adamw_kwargs)
        self.controller = Controller.from_pretrained(policy, **(controller or {}))
        self.controller.attach(self, total_steps=total_steps, model=model)

    @property
    def validation_steps(self) -> list[int]:
        """The steps at which the policy expects `valid_loss` (step 0, then evenly spaced)."""
        return self.controller.validation_steps

    def step(self, closure=None, *, loss: float | torch.Tensor | None = None, valid_loss: float | None = None):
        """One training step: the controller's (clipping, statistics, decisions, guard), then AdamW's
        update if the controller takes it. loss: this step's training loss, after loss.backward()
        (or a `closure` that computes it with its backward pass). Returns the loss.
        Raises TypeError without a loss or a closure."""
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if loss is None:
            raise TypeError("LhoptAdamW.step needs the step's loss: opt.step(loss=loss) after loss.backward()")
        if self.controller.step(loss=loss, valid_loss=valid_loss):
            super().step()
        return loss

    def state_dict(self) -> dict:
        """AdamW's state dict with the controller's (Controller.state_dict) under "lhopt"."""
        return {**super().state_dict(), "lhopt": self.controller.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        """AdamW's state, then the controller's: the run continues where it was saved. Raises
        ValueError for a state saved without the controller's (a plain AdamW's: the policy would
        start again at step 0) or one the controller refuses (another run length), before
        anything changes."""
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("lhopt"), dict):
            raise ValueError("LhoptAdamW.load_state_dict: this state has no controller state (a plain AdamW's?); "
                             "save opt.state_dict() of an LhoptAdamW to resume one")
        plain = {k: v for k, v in state_dict.items() if k != "lhopt"}
        groups = plain.get("param_groups")
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            raise ValueError(f"LhoptAdamW.load_state_dict: {len(groups) if isinstance(groups, list) else 'no'} param "
                             f"groups saved, this optimizer has {len(self.param_groups)}")
        self._check_adamw_state(plain)
        # the controller checks its whole state (nothing changes when it refuses), then AdamW's
        # follows; should AdamW still refuse, the controller goes back to where it was
        before = self.controller.state_dict()
        self.controller.load_state_dict(state_dict["lhopt"])
        try:
            super().load_state_dict(plain)
        except Exception:
            self.controller.load_state_dict(before)
            raise

    def _check_adamw_state(self, plain: dict) -> None:
        """ValueError unless AdamW's saved state fits these parameters: as many per group, each
        moment of its parameter's shape, finite (torch checks only the group sizes, and a state of
        another network of as many tensors would fail later, in the statistics)."""
        saved = plain.get("state")
        if not isinstance(saved, dict):
            raise ValueError("LhoptAdamW.load_state_dict: no AdamW state in it")
        for group, mine in zip(plain["param_groups"], self.param_groups):
            ids = group.get("params") if isinstance(group, dict) else None
            if not isinstance(ids, list) or len(ids) != len(mine["params"]):
                raise ValueError("LhoptAdamW.load_state_dict: a param group of another size was saved; nothing "
                                 "was changed")
            numbers = [group.get(k) for k in ("lr", "eps", "weight_decay")] + list(group.get("betas") or [])
            if not all(isinstance(v, (int, float, torch.Tensor)) and math.isfinite(float(v)) for v in numbers):
                raise ValueError("LhoptAdamW.load_state_dict: a saved param group holds an lr, betas, eps or weight "
                                 "decay that is not a finite number; nothing was changed")
            for key, param in zip(ids, mine["params"]):
                for name, moment in (saved.get(key) or {}).items():
                    if name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") and (
                            not torch.is_tensor(moment) or moment.shape != param.shape
                            or not torch.isfinite(moment).all() or (name != "exp_avg" and bool((moment < 0).any()))):
                        raise ValueError(f"LhoptAdamW.load_state_dict: the saved {name} of a parameter of shape "
                                         f"{tuple(param.shape)} is not one of its shape, not finite, or (a second "
                                         "moment) negative: another network's or a damaged state; nothing was changed")
