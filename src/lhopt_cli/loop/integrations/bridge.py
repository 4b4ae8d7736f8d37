"""What both framework callbacks share: the losses of the micro-batches since the last update,
the pending validation loss, and a gate on the optimizer's step so that an update the
Controller declines (right after a restore) is not taken even though the framework calls
optimizer.step() itself."""
from __future__ import annotations

import math

import torch

from lhopt_cli.loop.controller import Controller


class StepGate:
    """Wraps `optimizer.step` (on the instance): a closure still runs (the frameworks pass the
    forward and backward pass as one), the update itself only when `take` is True. Gradient
    scalers and LR schedulers call the wrapper like the original."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer, self.take, self.skipped = optimizer, True, 0
        self._original = optimizer.step
        optimizer.step = self._step

    def _step(self, closure=None, **kwargs):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.take:
            self._original(**kwargs)
        else:
            self.skipped += 1
        self.take = True
        return loss

    def remove(self) -> None:
        """Give the optimizer its own step back."""
        self.optimizer.step = self._original


class ControllerBridge:
    """A Controller attached to a framework's optimizer: `record_loss` per micro-batch,
    `record_validation` when the framework validates, `before_update` at the framework's
    before-optimizer-step hook (after backward, after gradient unscaling)."""

    def __init__(self, controller: Controller):
        self.controller, self.gate = controller, None
        self.losses: list[torch.Tensor] = []
        self.pending_valid: float | None = None

    def attach(self, optimizer: torch.optim.Optimizer, total_steps: int, model: torch.nn.Module) -> None:
        """Raises TypeError (not AdamW-like) and ValueError (total_steps) as Controller.attach."""
        self.controller.attach(optimizer, total_steps=int(total_steps), model=model)
        self.gate = StepGate(optimizer)

    def record_loss(self, loss: torch.Tensor | float) -> None:
        self.losses.append(loss.detach().float().reshape(()) if torch.is_tensor(loss) else torch.tensor(float(loss)))

    def record_validation(self, value) -> None:
        value = float(value)
        self.pending_valid = value if math.isfinite(value) or self.controller.guard else None

    def before_update(self) -> bool:
        """One Controller step with the mean loss of the micro-batches since the last update;
        sets whether the framework's coming optimizer.step() updates. Re-applies the
        controller's hyperparameters first, so a framework's scheduler cannot override them."""
        ctrl = self.controller
        if ctrl.step_index >= ctrl.total_steps:  # a framework running past its estimate: hold still
            self.gate.take = True
            return True
        ctrl.reassert_hparams()
        if not self.losses:
            raise RuntimeError("lhopt: no training loss was seen before this optimizer step")
        loss = torch.stack([x.to(self.losses[0].device) for x in self.losses]).mean()
        self.losses = []
        valid, self.pending_valid = self.pending_valid, None
        take = ctrl.step(loss=loss, valid_loss=valid)
        self.gate.take = take
        return take

    def detach(self) -> None:
        if self.gate is not None:
            self.gate.remove()
