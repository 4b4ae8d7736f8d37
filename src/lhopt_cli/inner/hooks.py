"""The hook interface through which schedules, the reference run and the policy drive a run."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lhopt_cli.inner.optim import HParams, RollingMaxClipper


def clone_tree(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples whose tensors are cloned (much cheaper than deepcopy)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {key: clone_tree(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_tree(value) for value in obj)
    return obj


def copy_tree(obj: Any, into: Any) -> Any:
    """clone_tree(obj), writing each tensor into the tensor at the same place of `into` (an
    earlier copy of the same structure) where shape, dtype and device match: no allocation,
    one foreach copy. Elsewhere a fresh clone."""
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def walk(src: Any, dst: Any) -> Any:
        if isinstance(src, torch.Tensor):
            if (isinstance(dst, torch.Tensor) and dst.shape == src.shape and dst.dtype == src.dtype
                    and dst.device == src.device):
                pairs.append((dst, src.detach()))
                return dst
            return src.detach().clone()
        if isinstance(src, dict):
            dst = dst if isinstance(dst, dict) else {}
            return {key: walk(value, dst.get(key)) for key, value in src.items()}
        if isinstance(src, (list, tuple)):
            dst = dst if isinstance(dst, (list, tuple)) and len(dst) == len(src) else [None] * len(src)
            return type(src)(walk(value, old) for value, old in zip(src, dst))
        return src

    copied = walk(obj, into)
    if pairs:
        torch._foreach_copy_([d for d, _ in pairs], [s for _, s in pairs])
    return copied


def snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer, clipper: RollingMaxClipper,
             into: dict[str, Any] | None = None) -> dict[str, Any]:
    """Weights, optimizer state and clipping state, copied (for the restart action and the
    divergence guard); `into`: a snapshot no longer needed, whose tensors are reused. The
    optimizer's own state (torch.optim.Optimizer's), without what a subclass adds to its state
    dict (LhoptAdamW's controller state)."""
    state = {"model": model.state_dict(), "optimizer": torch.optim.Optimizer.state_dict(optimizer)}
    copied = clone_tree(state) if into is None else copy_tree(state, into)
    return {**copied, "clipper": clipper.state_dict()}


def restore(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            clipper: RollingMaxClipper) -> None:
    """Load a snapshot; its tensors are copied again so the register stays intact for a later load."""
    model.load_state_dict(state["model"])
    torch.optim.Optimizer.load_state_dict(optimizer, clone_tree(state["optimizer"]))
    clipper.load_state_dict(state["clipper"])


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
        return snapshot(self.model, self.optimizer, self.clipper)

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a saved state; the step budget is not restored (a restart costs compute)."""
        restore(state, self.model, self.optimizer, self.clipper)


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
