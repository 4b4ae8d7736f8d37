"""The hook interface through which schedules, the reference run and the policy drive a run."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from .optim import HParams, RollingMaxClipper


@dataclass
class RunContext:
    """What a hook sees and may change. Setting `hparams` takes effect at the current step."""

    step: int
    total_steps: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    hparams: HParams
    clipper: RollingMaxClipper
    clipped: bool = False  # whether the last step's gradient was clipped
    grad_norm: float = 0.0  # the last step's global gradient norm (before clipping)
    extras: dict[str, Any] = field(default_factory=dict)

    def save_state(self) -> dict[str, Any]:
        """A copy of weights, optimizer state and clipping state (for the restart action)."""
        return copy.deepcopy(
            {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "clipper": self.clipper.state_dict()}
        )

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a saved state; the step budget is not restored (a restart costs compute)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.clipper.load_state_dict(state["clipper"])


class Hook:
    """Base hook: every callback does nothing. Subclasses override what they need."""

    def on_start(self, run: RunContext) -> None:
        pass

    def before_step(self, run: RunContext) -> None:
        pass

    def after_step(self, run: RunContext, train_loss: float) -> None:
        pass

    def on_eval(self, run: RunContext, valid_loss: float) -> None:
        pass
