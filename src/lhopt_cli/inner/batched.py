"""K same-shape runs of one task in one process: each weight stacked as a [K, ...] leaf, one
vmapped forward/backward for all members, then per member torch's fused AdamW kernel with that
member's own hyperparameters and clip threshold.

Member i matches `train_one_epoch(task, seeds[i], hooks[i], hparams[i])`: the same
initialisation, data order, AdamW arithmetic (torch's, bias correction from the current
betas), clipping rule and validation points. A member whose loss turns NaN/inf is frozen and
marked diverged; the others go on. A member told to `skip_next_step` (after a restart) spends
its next step without an update: no loss recorded, no clipping state, no moments, no statistics.

With `guard`, a member whose training loss blows up (inner/guard.py), whose validation loss turns NaN/inf, or
whose validation loss stalls at or above its start's past a quarter of the run is not frozen: it
goes back to its last guard point (after a stall: to its start) with half the smaller of the learning
rates then and now (inner/guard.py). A point offered by `set_guard_point` (at each decision) holds
once the next step's loss at it is healthy; the start always holds.
"""
from __future__ import annotations

import math
from collections import deque
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.func import functional_call, vmap
from torch.optim.adamw import adamw

from lhopt_cli.tasks import Task
from lhopt_cli.inner.hooks import Hook
from lhopt_cli.inner.loop import RunResult
from lhopt_cli.inner.optim import HPARAM_NAMES, HParams
from lhopt_cli.inner.schedules import SCHEDULES, lr_multiplier
from lhopt_cli.inner.stats import adamw_stats
from lhopt_cli.support.threads import on_run_threads
from lhopt_cli.inner.guard import START_STEPS, guarded_hparams, healthy, stalled, train_median


# vmap runs attention member by member (no batching rule yet); correct, and measured by the
# scheduler, so the warning adds nothing
warnings.filterwarnings("ignore", message=".*not yet implemented the batching rule for aten::_scaled_dot")


@dataclass
class MemberContext:
    """A member's view for hooks, shaped like the single loop's RunContext."""

    engine: "BatchedRun"
    index: int
    step: int
    total_steps: int
    hparams: HParams
    clipped: bool = False
    grad_norm: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)  # sums since the last reset
    stats_count: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    def save_state(self) -> dict[str, Any]:
        return self.engine.save_member(self.index)

    def load_state(self, state: dict[str, Any]) -> None:
        self.engine.load_member(self.index, state)


class _Member:
    """Calls the task's module with one member's parameters (inside vmap)."""

    def __init__(self, module: torch.nn.Module, params: dict, buffers: dict):
        self.module, self.params, self.buffers = module, params, buffers

    def __call__(self, *args):
        return functional_call(self.module, (self.params, self.buffers), args)

    def train(self, mode: bool = True):  # the tasks' models have no train/eval differences
        return self

    def eval(self):
        return self

    training = True


class BatchedRun:
    def __init__(self, task: Task, seeds: list[int], hooks: list[Hook] | None = None,
                 hparams: list[HParams] | None = None, stats_every: int = 0, guard: bool = False,
                 lr_decay: str = "constant"):
        self.task, self.seeds, self.K = task, list(seeds), len(seeds)
        self.guard = guard
        if lr_decay not in SCHEDULES:
            raise ValueError(f"unknown lr_decay '{lr_decay}'; known: {', '.join(SCHEDULES)}")
        self.lr_decay = lr_decay  # a schedule multiplying every member's lr at each step (control/protocol.py)
        self.guard_points: list[dict[str, Any] | None] = [None] * self.K  # held: a finite loss was seen there
        self.guard_offered: list[dict[str, Any] | None] = [None] * self.K  # held once its next loss is finite
        self.guard_restores = [0] * self.K  # how often each member went back to its guard point
        self.first_losses: list[float | None] = [None] * self.K  # each member's first training loss
        self.hooks = hooks or [Hook() for _ in seeds]
        hparams = hparams or [HParams() for _ in seeds]
        models = [task.make_model(seed) for seed in seeds]
        self.module = models[0]
        self.names = [n for n, p in self.module.named_parameters() if p.requires_grad]
        self.buffers = dict(self.module.named_buffers())  # shared: the tasks' buffers are constants
        member_params = [dict(m.named_parameters()) for m in models]
        # (K, *shape) leaves: separate tensors, so backward writes each gradient once, in place
        self.params = [torch.stack([mp[n].detach() for mp in member_params]).requires_grad_(True) for n in self.names]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = [[torch.tensor(0.0) for _ in self.params] for _ in seeds]  # as torch keeps them
        self.fused = True
        self.rolling_max = torch.zeros(self.K)
        self.active = torch.ones(self.K, dtype=torch.bool)
        self.skip = torch.zeros(self.K, dtype=torch.bool)  # members whose next step takes no update
        self.stats_every = stats_every
        self.ctx = [MemberContext(self, i, 0, task.total_steps, hp) for i, hp in enumerate(hparams)]
        loss_fn: Callable = lambda p, batch: task.loss(_Member(self.module, p, self.buffers), batch)
        self._train_loss = vmap(loss_fn)
        self._valid_loss = vmap(loss_fn, in_dims=(0, None))

    # --- parameters --------------------------------------------------------------------
    def _views(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.params))

    def member_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's weights as an ordinary state dict of the task's model."""
        return {n: p[i].detach().clone() for n, p in zip(self.names, self.params)}

    @property
    def trainable_params(self) -> int:
        """Parameters of one member that the optimizer updates (embeddings included)."""
        return sum(p[0].numel() for p in self.params)

    def _flat(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.detach().reshape(self.K, -1) for t in tensors], dim=1)  # (K, N)

    # --- restart registers -----------------------------------------------------------------
    def save_member(self, i: int) -> dict[str, Any]:
        return {"params": [p[i].detach().clone() for p in self.params],
                "exp_avg": [m[i].clone() for m in self.exp_avg], "exp_avg_sq": [v[i].clone() for v in self.exp_avg_sq],
                "steps": [t.clone() for t in self.steps[i]], "rolling_max": float(self.rolling_max[i])}

    def load_member(self, i: int, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for mine, saved in zip(self.params, state["params"]):
                mine[i].copy_(saved)
        for group in ("exp_avg", "exp_avg_sq"):
            for mine, saved in zip(getattr(self, group), state[group]):
                mine[i].copy_(saved)
        for mine, saved in zip(self.steps[i], state["steps"]):
            mine.copy_(saved)
        self.rolling_max[i] = state["rolling_max"]

    def set_guard_point(self, i: int) -> None:
        """Offer member i's state now (weights, optimizer and clipping state, hyperparameters) as
        its guard point; it holds once the loss of its next update is finite (only with `guard`)."""
        if self.guard:
            self.guard_offered[i] = {"state": self.save_member(i), "hparams": self.ctx[i].hparams}

    def _return_to_guard_point(self, i: int, stall: bool = False) -> None:
        self.guard_offered[i] = None  # the weights offered gave this non-finite loss
        if stall:  # back to the start, which remembers the halved lr (inner/guard.py)
            self.guard_points[i] = self.start_points[i]
        point = self.guard_points[i]
        self.load_member(i, point["state"])
        self.ctx[i].hparams = guarded_hparams(self.ctx[i].hparams, point["hparams"])
        if stall:
            self.start_points[i] = self.guard_points[i] = {**point, "hparams": self.ctx[i].hparams}
        self.guard_restores[i] += 1

    def skip_next_step(self, i: int) -> None:
        """Member i's next step consumes its batch but takes no update and records nothing."""
        self.skip[i] = True

    # --- one epoch ----------------------------------------------------------------------
    @torch.no_grad()
    def valid_losses(self) -> list[float]:
        pairs = self.task.valid_batches()
        views = {n: p.detach() for n, p in self._views().items()}
        total = sum(self._valid_loss(views, batch).double() * weight for batch, weight in pairs)
        return (total / sum(w for _, w in pairs)).tolist()

    def _hparam_columns(self) -> dict[str, torch.Tensor]:
        table = torch.tensor([[getattr(c.hparams, n) for n in HPARAM_NAMES] for c in self.ctx], dtype=torch.float64)
        return {name: table[:, j : j + 1] for j, name in enumerate(HPARAM_NAMES)}  # each (K, 1)

    @torch.no_grad()
    def _clip(self, grads: list[torch.Tensor], clip: torch.Tensor, stepping: torch.Tensor) -> None:
        """Per member: threshold = c x rolling max of its gradient norm (torch's clip arithmetic)."""
        # (K,): the norm of the per-tensor norms, as torch.nn.utils.get_total_norm computes it
        norms = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.reshape(self.K, -1), dim=1)
                                                      for g in grads]), dim=0)
        finite = torch.isfinite(norms) & stepping
        self.rolling_max = torch.where(finite, torch.maximum(0.99 * self.rolling_max, norms), self.rolling_max)
        threshold = clip * self.rolling_max
        clipped = (clip < 1.0) & (norms > threshold) & stepping
        if bool(clipped.any()):
            coef = torch.where(clipped, (threshold / (norms + 1e-6)).clamp(max=1.0), torch.ones_like(norms))
            for g in grads:
                g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
        for c, norm, was in zip(self.ctx, norms.tolist(), clipped.tolist()):
            c.grad_norm, c.clipped = norm, was

    @torch.no_grad()
    def _adamw(self, grads: list[torch.Tensor], sample_stats: bool, stepping: torch.Tensor) -> None:
        """torch's fused AdamW kernel on each active member's weights (frozen members skipped).

        One call per member gives exactly torch's arithmetic, including bias correction from
        the current betas, as in the single-run loop, and keeps each pass in cache.
        """
        before = self._flat(self.params) if sample_stats else None
        factor = self.lr_factor(self.step_index)
        for i, c in enumerate(self.ctx):
            if not stepping[i]:
                continue
            hp = c.hparams
            adamw([p.detach()[i] for p in self.params], [g[i] for g in grads], [m[i] for m in self.exp_avg],
                  [v[i] for v in self.exp_avg_sq], [], self.steps[i], fused=self.fused, amsgrad=False,
                  beta1=hp.beta1, beta2=hp.beta2, lr=hp.lr * factor, weight_decay=hp.weight_decay, eps=hp.eps,
                  maximize=False)
        if sample_stats:
            self._accumulate(self._stats(before, self._flat(grads)), stepping)

    def lr_factor(self, step: int) -> float:
        """The decay's multiplier on the lr for the step taken at `step` (1.0 without a decay)."""
        return 1.0 if self.lr_decay == "constant" else lr_multiplier(self.lr_decay, step, self.task.total_steps)

    def _stats(self, param: torch.Tensor, grad: torch.Tensor) -> dict[str, torch.Tensor]:
        hp = {k: v.float() for k, v in self._hparam_columns().items()}
        steps = torch.tensor([float(s[0]) for s in self.steps])[:, None].clamp_min(1.0)
        return adamw_stats(param, grad, self._flat(self.exp_avg), self._flat(self.exp_avg_sq),
                           hp["beta1"], hp["beta2"], hp["eps"], steps)

    def _accumulate(self, stats: dict[str, torch.Tensor], stepping: torch.Tensor) -> None:
        columns = {k: v.tolist() for k, v in stats.items()}
        for i, c in enumerate(self.ctx):
            if not stepping[i]:
                continue
            for name, values in columns.items():
                c.stats[name] = c.stats.get(name, 0.0) + values[i]
            c.stats["clipped"] = c.stats.get("clipped", 0.0) + float(c.clipped)
            c.stats_count += 1

    # --- stepping: begin(), then step() until finished, then results() -------------------
    def begin(self) -> None:
        """Validate the initial weights and call the hooks' on_start."""
        K = self.K
        self.step_index = 0
        self._eval_at = set(self.task.eval_steps())
        self._start = time.perf_counter()
        self._curves: list[list[dict]] = [[] for _ in range(K)]
        self._recent: list[list[float]] = [[] for _ in range(K)]
        # the stall rule's training losses (inner/guard.py): each member's first and latest START_STEPS
        self._first_train: list[list[float]] = [[] for _ in range(K)]
        self._latest_train = [deque(maxlen=START_STEPS) for _ in range(K)]
        self._status = ["done"] * K
        self._done_steps = [self.task.total_steps] * K
        self._batches = iter(self.task.member_batches(self.seeds))
        self._initial = self.valid_losses()
        self.initial_valid_losses = list(self._initial)
        for hook, c in zip(self.hooks, self.ctx):
            hook.on_start(c)
        if self.guard:
            self.guard_points = [{"state": self.save_member(i), "hparams": c.hparams} for i, c in enumerate(self.ctx)]
            self.start_points = list(self.guard_points)  # where a stall goes back to (inner/guard.py)

    @property
    def finished(self) -> bool:
        return self.step_index >= self.task.total_steps or not bool(self.active.any())

    def _record(self, i: int, step: int, valid: float) -> None:
        recent = self._recent[i]
        train = sum(recent) / len(recent) if recent else math.nan
        # the lr of the step just taken, the decay included, as a baseline's curve shows its schedule's
        hparams = self.ctx[i].hparams.as_dict()
        hparams["lr"] *= self.lr_factor(max(step - 1, 0))
        self._curves[i].append({"step": step, "train_loss": train, "valid_loss": valid,
                                **hparams, "wall_s": time.perf_counter() - self._start})
        recent.clear()

    def _diverge(self, i: int, step: int, valid: float, record: bool = True) -> None:
        self._status[i], self._done_steps[i] = "diverged", step
        if record:
            self._record(i, step, valid)
        self.active[i] = False

    def step(self, sample_stats: bool = False) -> list[float]:
        """One inner step of every live member; returns the members' training losses.

        Statistics are sampled every `stats_every` steps, and at this step if `sample_stats`."""
        step, K = self.step_index, self.K
        batch = next(self._batches)
        live = [i for i in range(K) if self.active[i]]
        for i in live:
            self.ctx[i].step = step
            self.hooks[i].before_step(self.ctx[i])
            if step == 0:
                self._record(i, 0, self._initial[i])
        clip = torch.tensor([c.hparams.clip for c in self.ctx])
        for p in self.params:
            p.grad = None
        losses = self._train_loss(self._views(), batch)  # (K,)
        values = losses.detach().tolist()
        stepping = self.active & ~self.skip
        guarded = torch.zeros(K, dtype=torch.bool)  # members sent back to their guard point now
        for i in live:
            if not stepping[i]:
                continue
            if self.first_losses[i] is None:
                self.first_losses[i] = values[i]
            if self.guard and not healthy(values[i], self.first_losses[i]):
                guarded[i] = True  # sent back after the backward pass, which still reads these weights
                continue
            if self.guard_offered[i] is not None:
                self.guard_points[i], self.guard_offered[i] = self.guard_offered[i], None
            self._recent[i].append(values[i])
            if len(self._first_train[i]) < START_STEPS:
                self._first_train[i].append(values[i])
            self._latest_train[i].append(values[i])
            if not math.isfinite(values[i]):
                self._diverge(i, step, self.valid_losses()[i])
        stepping = self.active & ~self.skip & ~guarded
        torch.where(stepping, losses, torch.zeros_like(losses)).sum().backward()
        grads = [p.grad for p in self.params]
        self._clip(grads, clip, stepping)
        sample = self.stats_every > 0 and (sample_stats or step % self.stats_every == 0)
        self._adamw(grads, sample, stepping)
        for i in guarded.nonzero().flatten().tolist():
            self._return_to_guard_point(i)
        self.step_index = step + 1
        live = [i for i in range(K) if self.active[i]]
        for i in live:
            self.ctx[i].step = step + 1
            if stepping[i]:
                self.hooks[i].after_step(self.ctx[i], values[i])
        self.skip[:] = False
        if step + 1 in self._eval_at:
            valid = self.valid_losses()
            total = self.task.total_steps
            stalls = {i for i in live if self.guard and stalled(valid[i], self._initial[i], step + 1, total,
                                                               train_median(self._latest_train[i]),
                                                               train_median(self._first_train[i]))}
            bad = [i for i in live if self.guard and (not math.isfinite(valid[i]) or i in stalls)]
            for i in bad:  # the curve gets the loss at the point returned to; the hooks see no validation
                self._return_to_guard_point(i, stall=i in stalls)
                self.skip_next_step(i)  # as Controller: in a user's loop the next gradient is of the bad weights
            if bad:
                again = self.valid_losses()
                for i in bad:
                    self._record(i, step + 1, again[i])
            for i in (i for i in live if i not in bad):
                self._record(i, step + 1, valid[i])
                self.hooks[i].on_eval(self.ctx[i], valid[i])
                if not math.isfinite(valid[i]):
                    self._diverge(i, step + 1, valid[i], record=False)
        return values

    def results(self) -> list[RunResult]:
        wall = time.perf_counter() - self._start
        return [RunResult(self._status[i], self._done_steps[i], self._curves[i], wall) for i in range(self.K)]

    def run(self) -> list[RunResult]:
        self.begin()
        while not self.finished:
            self.step()
        return self.results()


@on_run_threads
def train_batched(task: Task, seeds: list[int], hooks: list[Hook] | None = None,
                  hparams: list[HParams] | None = None, stats_every: int = 0, guard: bool = False,
                  lr_decay: str = "constant") -> list[RunResult]:
    """One epoch of K members at once; result i has the form train_one_epoch gives."""
    return BatchedRun(task, seeds, hooks, hparams, stats_every, guard, lr_decay).run()
