"""The library surface: drive a plain torch AdamW in your own training loop with a policy.

    ctrl = Controller.from_pretrained()                 # the bundled default policy
    ctrl.attach(optimizer, total_steps=T, model=net)    # net: enables the restart action
    for step, batch in enumerate(loader):
        loss = ...; loss.backward()
        ctrl.step(loss=loss.item(), valid_loss=maybe)   # clips; sets hyperparameters; may restore
        optimizer.step(); optimizer.zero_grad()

Per step it clips the gradient (c x rolling max of its norm, as in meta-training) and, every
`stats_every` steps, reduces a few statistics; the policy runs only at its decision points.
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .control.actions import EVAL_START, apply_action, restart_kind
from .control.checkpoint import PolicyFileError, load_policy
from .control.features import FeatureTracker, Register, to_vector
from .inner.hooks import restore, snapshot
from .inner.optim import RollingMaxClipper, apply_hparams, read_hparams
from .inner.stats import adamw_stats

ADAMW_KEYS = ("lr", "betas", "eps", "weight_decay")


def default_policy_path() -> Path:
    return Path(str(resources.files("lhopt_cli"))) / "policies" / "default.pt"


class Controller:
    def __init__(self, agent, meta: dict, greedy: bool = True, seed: int = 0):
        """greedy: argmax actions (as `lhopt evaluate` by default); False samples them, seeded."""
        self.agent, self.meta, self.greedy = agent, meta, greedy
        controller = meta.get("config", {}).get("controller", {})
        self.decisions = int(controller.get("eval_decisions", 64))
        self.stats_every = int(controller.get("stats_every", 4))
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = None

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, **kwargs) -> "Controller":
        """The bundled default policy (or a policy file at `path`)."""
        return cls.from_checkpoint(path or default_policy_path(), **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> "Controller":
        agent, meta = load_policy(Path(path))
        return cls(agent, meta, **kwargs)

    # --- attaching ---------------------------------------------------------------------------
    def attach(self, optimizer: torch.optim.Optimizer, total_steps: int | None = None,
               model: torch.nn.Module | None = None, decisions: int | None = None) -> "Controller":
        if not optimizer.param_groups or any(k not in group for group in optimizer.param_groups for k in ADAMW_KEYS):
            raise TypeError(f"{type(optimizer).__name__} is not AdamW-like: the controller sets lr, betas, eps "
                            "and weight_decay in its param_groups (use torch.optim.AdamW)")
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError("attach(..., total_steps=T) needs the run's number of steps (a positive int)")
        self.optimizer, self.model, self.total_steps = optimizer, model, total_steps
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.hparams = read_hparams(optimizer, clip=EVAL_START.clip)
        self.tracker = FeatureTracker(self.hparams, sum(p.numel() for p in self.params))
        count = min(decisions or self.decisions, max(total_steps - 1, 1))
        self.boundaries = [int(b) for b in np.unique(np.linspace(0, total_steps, count + 2).round())][1:-1]
        self.clipper = RollingMaxClipper()
        self.state = self.agent.initial_state(1)
        self.step_index, self.interval_losses, self.valid = 0, [], math.nan
        self.stats, self.stats_count = {}, 0
        self.history: list[dict] = []  # one row per decision: step, hyperparameters, restart
        return self

    # --- every step ----------------------------------------------------------------------------
    def step(self, loss: float, valid_loss: float | None = None) -> None:
        """Call after loss.backward() and before optimizer.step()."""
        if self.optimizer is None:
            raise RuntimeError("call attach(optimizer, total_steps=...) before step()")
        if self.step_index in self.boundaries:
            self._decide()
        if valid_loss is not None:
            self.valid = float(valid_loss)
        self.interval_losses.append(float(loss))
        _, clipped = self.clipper(self.params, self.hparams.clip)
        if self.step_index % self.stats_every == 0:
            self._sample_stats(clipped)
        self.step_index += 1

    @torch.no_grad()
    def _sample_stats(self, clipped: bool) -> None:
        """The engine's statistics, from the moments AdamW is about to compute at this step."""
        hp, parts = self.hparams, {"p": [], "g": [], "m": [], "v": []}
        bias_step = None
        for p in self.params:
            if p.grad is None:
                continue
            state = self.optimizer.state.get(p, {})
            g = p.grad.detach().reshape(-1).float()
            m = state["exp_avg"].reshape(-1) if "exp_avg" in state else torch.zeros_like(g)
            v = state["exp_avg_sq"].reshape(-1) if "exp_avg_sq" in state else torch.zeros_like(g)
            bias_step = float(state["step"]) + 1 if "step" in state else 1.0
            parts["p"].append(p.detach().reshape(-1).float())
            parts["g"].append(g)
            parts["m"].append(torch.lerp(m, g, 1 - hp.beta1))
            parts["v"].append(v * hp.beta2 + (1 - hp.beta2) * g * g)
        if bias_step is None:
            return
        p, g, m, v = (torch.cat(parts[k])[None] for k in ("p", "g", "m", "v"))
        stats = adamw_stats(p, g, m, v, hp.beta1, hp.beta2, hp.eps, bias_step)
        for name, value in stats.items():
            self.stats[name] = self.stats.get(name, 0.0) + float(value[0])
        self.stats["clipped"] = self.stats.get("clipped", 0.0) + float(clipped)
        self.stats_count += 1

    def _decide(self) -> None:
        progress = self.step_index / self.total_steps
        train = float(np.mean(self.interval_losses)) if self.interval_losses else math.nan
        feats = self.tracker.features(progress, self.stats, self.stats_count, train, self.valid, self.hparams)
        self.stats, self.stats_count, self.interval_losses = {}, 0, []
        obs = torch.as_tensor(to_vector(feats))[None]
        action, self.state = self.agent.act(obs, self.state, torch.zeros(1), self.greedy, self.generator)
        action = tuple(int(a) for a in action[0])
        self.tracker.prev_action = action
        self.hparams, code = apply_action(self.hparams, action)
        kind, register = restart_kind(code)
        if kind == "save" and self.model is not None:
            saved = snapshot(self.model, self.optimizer, self.clipper)
            self.tracker.registers[register] = Register(saved, self.tracker.last_train, progress)
        elif kind == "load" and self.model is not None and self.tracker.registers[register] is not None:
            restore(self.tracker.registers[register].state, self.model, self.optimizer, self.clipper)
        apply_hparams(self.optimizer, self.hparams)
        self.history.append({"step": self.step_index, **self.hparams.as_dict(), "restart": kind, "register": register})


__all__ = ["Controller", "PolicyFileError", "default_policy_path"]
