"""The Controller's loop checks: a training loop that works against the Controller is told so,
once per kind and run (ControllerMisuseWarning), and nothing else changes."""
from __future__ import annotations

import math
import warnings

MISUSES = ("lr", "valid", "extra_valid", "grad", "weight_decay")  # the kinds told, each once


class ControllerMisuseWarning(UserWarning):
    """A training loop that works against the Controller, said once per kind and run: another
    scheduler or code changed the learning rate between two steps (the Controller sets it; a
    StepLR beside it fights it), no validation loss at the protocol's validation steps (the
    policy was trained to see one there), one at another step (its decisions then differ from
    `lhopt evaluate`'s), a step() with no parameter holding a gradient (called
    before loss.backward(), or after zero_grad()), and at attach() a weight decay of 0 in every
    param group (relative actions keep it at 0)."""


class LoopChecks:
    """The checks of one attached run. `validation_steps`: the steps whose validation loss the
    policy expects (Controller.validation_steps)."""

    def __init__(self, validation_steps: list[int]):
        self.validation_steps = set(validation_steps)
        self.lr_left: float | None = None  # the lr the last step() left in the optimizer: another writer shows
        self.warned: set[str] = set()

    @property
    def done(self) -> bool:
        """Every kind has been told: nothing is looked at again."""
        return len(self.warned) >= len(MISUSES)

    def warn_once(self, kind: str, message: str, stacklevel: int = 4) -> None:
        if kind not in self.warned:
            self.warned.add(kind)
            warnings.warn(message, ControllerMisuseWarning, stacklevel=stacklevel)

    def at_attach(self, optimizer) -> None:
        """A weight decay of 0 in every param group: the policy's relative actions keep it at 0."""
        if all(float(group["weight_decay"]) == 0.0 for group in optimizer.param_groups):
            self.warn_once("weight_decay", "every param group has weight_decay 0: the policy's actions are relative, "
                           "so a zero stays zero and its weight-decay actions do nothing; give AdamW its default "
                           "0.01 (the Hugging Face Trainer's default is 0.0) to let the policy set it", stacklevel=4)

    def at_step(self, optimizer, params, step_index: int, valid_loss) -> None:
        """Before a step() is taken: the lr changed since the last step() by something else, no
        valid_loss at a validation step, one at another step, no gradient at all."""
        lr = float(optimizer.param_groups[0]["lr"])
        if ("lr" not in self.warned and self.lr_left is not None
                and not math.isclose(lr, self.lr_left, rel_tol=1e-9, abs_tol=0.0)):
            self.warn_once("lr", f"the learning rate changed between two Controller.step() calls ({self.lr_left:.3g} "
                           f"-> {lr:.3g}) by something else, e.g. a torch lr scheduler: the Controller sets the lr "
                           "(the policy's decay included); remove the other scheduler")
        if "valid" not in self.warned and valid_loss is None and step_index in self.validation_steps:
            self.warn_once("valid", f"no valid_loss at step {step_index}, one of ctrl.validation_steps: the "
                           "policy was trained to see a validation loss there; without it its decisions "
                           "use a stale one and the divergence guard cannot see a stall")
        if "extra_valid" not in self.warned and valid_loss is not None and step_index not in self.validation_steps:
            self.warn_once("extra_valid", f"a valid_loss at step {step_index}, not one of ctrl.validation_steps: "
                           "the policy was trained to see one only there, so its decisions now differ from "
                           "`lhopt evaluate`'s; pass None at the other steps")
        if "grad" not in self.warned and all(p.grad is None for p in params):  # once said, not looked at again
            self.warn_once("grad", "Controller.step() found no gradient on any parameter: call it after "
                           "loss.backward() and before optimizer.zero_grad()")

    def after_step(self, optimizer) -> None:
        """The lr this step() leaves in the optimizer: a different one at the next step was written
        by something else."""
        self.lr_left = float(optimizer.param_groups[0]["lr"])
