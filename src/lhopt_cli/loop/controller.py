"""The library surface: drive a plain torch AdamW in your own training loop with a policy.

    ctrl = Controller.from_pretrained()                 # the bundled default policy
    ctrl.attach(optimizer, total_steps=T, model=net)    # net: enables the restart action
    for step, batch in enumerate(loader):
        loss = ...; loss.backward()
        valid = evaluate(net) if step in ctrl.validation_steps else None
        if ctrl.step(loss=loss.item(), valid_loss=valid):   # False right after a restart
            optimizer.step()
        optimizer.zero_grad()

Per step it clips the gradient (c x rolling max of its norm, as in meta-training) and samples a
few statistics every `stats_every` steps and at the last step before each decision; the policy
runs only at its decision points. All of it follows the policy file's observation protocol, so
the Controller in a plain loop makes the decisions `lhopt evaluate` makes on the same run.
"""
from __future__ import annotations

import hashlib
import math
import operator
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from lhopt_cli.control.actions import EVAL_START, apply_action, restart_kind
from lhopt_cli.control.checkpoint import PolicyFileError, load_policy, policy_protocol
from lhopt_cli.control.features import FeatureTracker, Register, no_restart_mask, to_vector
from lhopt_cli.control.protocol import ProtocolError, decision_steps
from lhopt_cli.inner.hooks import restore, snapshot
from lhopt_cli.inner.optim import ADAMW_KEYS, HParams, RollingMaxClipper, apply_hparams, group_scales, refuse_coupled_decay
from lhopt_cli.inner.stats import STAT_NAMES, concatenated_adamw_stats
from lhopt_cli.loop import controller_state
from lhopt_cli.loop.controller_guard import ControllerGuard
from lhopt_cli.loop.misuse import ControllerMisuseWarning, LoopChecks
from lhopt_cli.support.threads import run_threads
from lhopt_cli.tasks.base import eval_steps

def default_policy_path() -> Path:
    return Path(str(resources.files("lhopt_cli"))) / "policies" / "default.pt"


class Controller:
    """A trained LHOPT policy driving a torch AdamW in the user's own loop (module docstring).

    Attributes after attach(): `boundaries` (the decision steps), `validation_steps` (the steps
    whose validation loss the policy expects), `hparams` (the current reference values; param
    groups keep their ratios to them), `history` (one dict per decision: step, lr, beta1,
    beta2, eps, weight_decay, clip, restart, register, guard_returns), `step_index` (optimizer
    steps counted so far), `guard_returns`. The policy network runs on the CPU whatever device
    the model is on; per step one value (the gradient norm, with the loss when given as a
    tensor) comes to the host.
    """

    def __init__(self, agent, meta: dict, greedy: bool = True, seed: int = 0, guard: bool = True):
        """greedy: argmax actions (as `lhopt evaluate` by default); False samples them, seeded.
        guard: the divergence guard (inner/guard.py), as `lhopt evaluate` runs by default: with
        a `model` attached, the state at each decision is kept (one copy of the weights and the
        optimizer state) and a NaN/inf loss sends the run back there with half the learning rate.
        The observation protocol (decisions per run, statistics cadence, validation points,
        parameter count) is the policy file's (`meta`)."""
        self.agent, self.meta, self.greedy, self.guard, self.seed = agent, meta, greedy, guard, seed
        self.policy_sha256: str | None = None  # the policy file's, when loaded from one (schedule files)
        self.protocol = policy_protocol(meta)
        self.decisions, self.stats_every = self.protocol.decisions, self.protocol.stats_every
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = None
        self.writer = None  # a TensorBoard SummaryWriter (log_to)

    def log_to(self, writer) -> "Controller":
        """Write each decision to TensorBoard: `writer` a torch SummaryWriter (or a folder for a
        new one; needs `pip install tensorboard`); scalars lhopt/lr (the policy's), lr_used (times
        the protocol's decay there: the lr the step uses), beta1, beta2, eps, weight_decay, clip,
        guard_returns and restart (0 none, 1 save, 2 load), at the optimizer step of the decision.
        Raises TensorBoardUnavailable (a RuntimeError) without tensorboard."""
        if isinstance(writer, (str, Path)):
            from lhopt_cli.support.tensorboard_log import summary_writer

            writer = summary_writer(writer)
        self.writer = writer
        return self

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, **kwargs) -> "Controller":
        """The bundled default policy (or a policy file at `path`); kwargs as the constructor.
        Raises PolicyFileError (one line) for a missing, damaged or foreign file."""
        return cls.from_checkpoint(default_policy_path() if path is None else path, **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> "Controller":
        """The policy file at `path` (`lhopt train-policy` writes policy.pt and best.pt);
        raises PolicyFileError as from_pretrained (an empty path too)."""
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise PolicyFileError(f"policy path {path!r}: give a policy file (or None for the bundled policy)")
        agent, meta = load_policy(Path(path))
        controller = cls(agent, meta, **kwargs)
        controller.policy_sha256 = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return controller

    # --- attaching ---------------------------------------------------------------------------
    def attach(self, optimizer: torch.optim.Optimizer, total_steps: int | None = None,
               model: torch.nn.Module | None = None, decisions: int | None = None) -> "Controller":
        """Drive `optimizer` (AdamW-like) for a run of `total_steps` optimizer steps.

        model: the module whose weights the restart action saves and restores (without it the
        policy never restarts; under a `non_embedding` protocol it also tells which parameters are
        embeddings). decisions: only checked against the policy's protocol.
        Param groups may differ (per-group learning rates, weight decay 0 on biases and norms):
        every action is relative, so each group's value keeps its ratio to the others and a zero
        stays zero.
        Raises TypeError (not a torch optimizer, a model that is not an nn.Module, not AdamW-like:
        no lr, betas, eps, weight_decay in its param groups, or
        torch's Adam, NAdam, RAdam or Adamax, whose weight decay is an L2 term on the gradient),
        ValueError (total_steps not a positive integer; every group's lr 0, as a warmup scheduler
        leaves it before its first step), ProtocolError (decisions)."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"attach() needs the torch optimizer the loop steps (torch.optim.AdamW), got "
                            f"{type(optimizer).__name__}")
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(f"attach(model=...) takes the torch.nn.Module being trained (or None), got "
                            f"{type(model).__name__}")
        if not optimizer.param_groups or any(k not in group for group in optimizer.param_groups for k in ADAMW_KEYS):
            raise TypeError(f"{type(optimizer).__name__} is not AdamW-like: the controller sets lr, betas, eps "
                            "and weight_decay in its param_groups (use torch.optim.AdamW)")
        refuse_coupled_decay(optimizer)
        try:
            total_steps = operator.index(total_steps) if not isinstance(total_steps, bool) else None
        except TypeError:
            total_steps = None
        if total_steps is None or total_steps < 1:
            raise ValueError("attach(..., total_steps=T) needs the run's number of steps (a positive int)")
        if all(float(group["lr"]) == 0.0 for group in optimizer.param_groups):
            raise ValueError("the optimizer's learning rate is 0 (a warmup scheduler's first value?): the policy "
                             "moves it relatively, so give AdamW its base lr and let lhopt schedule it")
        self.protocol.check("Controller.attach", decisions=decisions)
        self.optimizer, self.model, self.total_steps = optimizer, model, total_steps
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        # param groups keep their ratios (a group's weight decay 0 stays 0): the policy moves
        # reference values, and every group follows relatively
        self.hparams, self.group_scales = group_scales(optimizer, clip=EVAL_START.clip)
        self.tracker = FeatureTracker(self.hparams, self._counted_params())
        self.boundaries = decision_steps(total_steps, self.decisions, self.protocol.min_interval)
        self._decision_at = set(self.boundaries)
        self.validation_steps = [0, *eval_steps(total_steps, self.protocol.eval_points)]
        self.clipper = RollingMaxClipper()
        self.state = self.agent.initial_state(1)
        self.mask = None if model is not None else no_restart_mask(1)  # nothing to save or restore
        self.step_index, self.interval_losses = 0, []
        self.valid, self.valid_is_new = math.nan, False
        # the interval's statistics: summed on the parameters' device, read once per decision
        self.stat_sums: torch.Tensor | None = None
        self.stats_count, self.clipped_count = 0, 0
        self.history: list[dict] = []  # one row per decision: step, hyperparameters, restart that happened
        # the divergence guard (controller_guard.py): active only with a model to restore
        self.divergence_guard = ControllerGuard(self.guard and model is not None, self._parts(), self.hparams)
        self.loop_checks = LoopChecks(self.validation_steps)
        self.loop_checks.at_attach(optimizer)
        return self

    def _parts(self) -> tuple:
        """What the guard and the restart action save and restore."""
        return self.model, self.optimizer, self.clipper

    @property
    def guard_returns(self) -> int:
        """How often the divergence guard has sent this run back."""
        return self.divergence_guard.returns if self.optimizer is not None else 0

    def write_schedule(self, path: str | Path, task: str = "user") -> Path:
        """Write the hyperparameters this run used so far as a schedule file (schedule_file.py;
        strict JSON): the start, each decision's values at its progress, the policy's lr decay,
        the param groups' ratios, the policy file's SHA-256 where known. `ReplaySchedule` plays
        it back on another run, of any length. Raises RuntimeError before attach()."""
        from lhopt_cli.loop.schedule_file import build_schedule, write_schedule

        if self.optimizer is None:
            raise RuntimeError("call attach(optimizer, total_steps=...) before write_schedule()")
        ratios = [{"lr": g["lr"], "weight_decay": g["weight_decay"]} for g in self.group_scales]
        schedule = build_schedule(self.tracker.start, self.history, self.total_steps, self.protocol.lr_decay, task,
                                  self.seed, self.policy_sha256, ratios)
        return write_schedule(path, schedule)

    # --- checkpoint and resume ---------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs to decide exactly as the uninterrupted one
        (controller_state.py): plain data and tensors (torch.save / torch.load(weights_only=True)
        keep it). Save it with the model's and the optimizer's state dicts. Raises RuntimeError
        before attach()."""
        if self.optimizer is None:
            raise RuntimeError("call attach(optimizer, total_steps=...) before state_dict()")
        return controller_state.capture(self)

    def load_state_dict(self, state: dict) -> None:
        """Continue a run from `state_dict()`: call after attach() with the restored optimizer (and
        model) and the same total_steps. Raises ValueError for a state that is not a whole
        Controller's (checked before anything changes: a truncated or foreign dict leaves the
        Controller as it was) or belongs to a run of another length, RuntimeError before attach()."""
        if self.optimizer is None:
            raise RuntimeError("call attach(optimizer, total_steps=...) before load_state_dict()")
        controller_state.check_header(state, self.total_steps)
        try:  # every value read into new objects first: a state that does not fit changes nothing
            new = controller_state.read(self, state)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as err:
            raise ValueError(f"not a whole Controller state ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:240] if str(err) else 'malformed'}); nothing was changed") from None
        for name, value in new.items():
            setattr(self, name, value)
        apply_hparams(self.optimizer, self.hparams, self.group_scales)
        self.loop_checks.lr_left = None  # the restored optimizer's lr is the Controller's own

    def _counted_params(self) -> int:
        """N of the protocol: the optimizer's parameters, less those of the model's nn.Embedding
        modules under `non_embedding` (without `model` nothing is known to be an embedding)."""
        total = sum(p.numel() for p in self.params)
        if self.protocol.parameter_count == "non_embedding" and self.model is not None:
            controlled = {id(p) for p in self.params}
            total -= sum(p.numel() for m in self.model.modules() if isinstance(m, torch.nn.Embedding)
                         for p in m.parameters() if id(p) in controlled)
        return total

    # --- every step ----------------------------------------------------------------------------
    def step(self, loss: float | torch.Tensor, valid_loss: float | None = None) -> bool:
        """Call after loss.backward(), before optimizer.step(); returns whether to take that step.
        loss: this step's training loss (a float, or a 0-d tensor, read with the gradient norm
        in one transfer).
        Raises RuntimeError before attach() and past `total_steps` calls, TypeError for a loss that
        is not a number or a tensor (None).

        valid_loss: a validation loss measured on the current weights (at `validation_steps`,
        as the policy was trained to see them; the last of them is the end of the run). At a decision point the policy acts first: it
        sets the hyperparameters and may save or restore a checkpoint; a policy whose protocol has an
        lr_decay has its learning rate multiplied by the decay at every step taken (the param
        groups then hold the decayed value). After a restore it
        returns False: this gradient belongs to the replaced weights, so skip optimizer.step()
        (the step still counts: a restart costs compute). A gradient that is not finite (mixed
        precision's overflow, after `scaler.unscale_(optimizer)`) returns False too, but that
        step does not count: the controller decides as if the call had not happened.
        With the divergence guard, a loss that has blown up (not finite: inner/guard.py), a
        valid_loss that is not finite, or one at or above the valid_loss given at step 0 once a
        quarter of the run has passed (a stall) sends the run back to its last guard point (model,
        optimizer, lr halved; after a stall: the run's start, so the guard keeps a third copy of
        the weights and optimizer state) and returns False; that step counts. Without it (guard=False, or no
        model attached) a non-finite loss returns False and counts: the run has diverged.
        A non-finite loss is a diverged model even under a GradScaler (its overflows show in the
        gradients, not in the loss). Raises ValueError for a loss tensor of more than one value.
        A loop that works against the controller is said once per kind (ControllerMisuseWarning):
        the lr changed between two calls by something else (another scheduler), no valid_loss at
        one of `validation_steps`, one at another step, no parameter with a gradient."""
        if isinstance(loss, bool) or not (isinstance(loss, (int, float)) or torch.is_tensor(loss)):
            raise TypeError(f"step(loss=...) takes this step's training loss, a number or a 0-d tensor "
                            f"(got {type(loss).__name__})")
        if self.optimizer is not None and self.step_index < self.total_steps and not self.loop_checks.done:
            self.loop_checks.at_step(self.optimizer, self.params, self.step_index, valid_loss)
        taken = self._step(loss, valid_loss)
        self.loop_checks.after_step(self.optimizer)
        return taken

    def reassert_hparams(self) -> None:
        """Write the controller's hyperparameters (its lr decay included) back into the optimizer
        over whatever a framework's own scheduler wrote since the last step(); the framework
        callbacks call it before each step(), so their schedulers are not taken for misuse."""
        apply_hparams(self.optimizer, self._decayed(), self.group_scales)
        self.loop_checks.after_step(self.optimizer)

    def _decayed(self) -> HParams:
        """The hyperparameters the last step taken used: the policy's lr times the decay there."""
        if self.protocol.lr_decay == "constant" or self.step_index == 0:
            return self.hparams
        return replace(self.hparams, lr=self.hparams.lr * self.protocol.lr_factor(self.step_index - 1, self.total_steps))

    def _step(self, loss: float | torch.Tensor, valid_loss: float | None = None) -> bool:
        """step() without the loop checks."""
        if self.optimizer is None:
            raise RuntimeError("call attach(optimizer, total_steps=...) before step()")
        if self.step_index >= self.total_steps:  # as torch's OneCycleLR: the schedule has ended
            raise RuntimeError(f"step() called {self.step_index + 1} times, but attach() was told total_steps="
                               f"{self.total_steps}: attach again with the run's real number of steps")
        # the engine's order (inner/batched.py): a validation of diverged weights sends the run
        # back and spends this step; then the decision; then this step's loss is checked
        guard = self.divergence_guard
        stall = valid_loss is not None and guard.stalled(valid_loss, self.step_index, self.total_steps)
        returned = guard.active and valid_loss is not None and (stall or not math.isfinite(float(valid_loss)))
        if returned:
            self._return_to_guard_point(stall=stall)
        elif valid_loss is not None:
            self.valid, self.valid_is_new = float(valid_loss), True
            guard.note_valid(self.valid, self.step_index)
        if torch.is_tensor(loss) and loss.numel() != 1:
            raise ValueError(f"step(loss=...) takes the batch's mean loss (one number), not a tensor of shape "
                             f"{tuple(loss.shape)}")
        # the step's one host transfer: the gradient norm (and the loss, when given as a tensor)
        norm = self.clipper.grad_norm(self.params)
        probe = [x.detach().float().reshape(()) for x in (norm, loss) if torch.is_tensor(x)]
        values = torch.stack([x.to(probe[0].device) for x in probe]).tolist() if probe else []
        norm_value = values.pop(0) if norm is not None else None
        loss_value = values.pop(0) if torch.is_tensor(loss) else float(loss)
        if not returned:
            guard.note_first_loss(loss_value)
        # a loss that blew up: the guard sends the run back; without it the step counts and
        # takes no update (the run has diverged, and the loop still ends)
        diverged = guard.diverged(loss_value)
        if not (returned or diverged) and norm_value is not None and not math.isfinite(norm_value):
            # inf/NaN gradients (a GradScaler's overflow): skip the step and count nothing, as
            # the scaler skips optimizer.step(); the run goes on as if it had not been there
            return False
        restored = self.step_index in self._decision_at and self._decide()
        self.step_index += 1
        if returned or restored:
            return False
        if diverged:
            if guard.active:
                self._return_to_guard_point()
            return False
        guard.note_train(loss_value)  # a healthy loss: the point offered holds
        self.interval_losses.append(loss_value)
        _, clipped = self.clipper(self.params, self.hparams.clip, norm, norm_value)
        if (self.step_index - 1) % self.stats_every == 0 or self.step_index in self._decision_at:
            self._sample_stats(clipped)  # every interval's last step is measured
        if self.protocol.lr_decay != "constant":  # the decay anneals the policy's lr at every step taken
            apply_hparams(self.optimizer, self._decayed(), self.group_scales)
        return True

    @torch.no_grad()
    def _sample_stats(self, clipped: bool) -> None:
        """The engine's statistics, from the moments AdamW is about to compute at this step,
        summed on the parameters' device (one concatenation, no host transfer)."""
        hp, with_grad = self.hparams, [p for p in self.params if p.grad is not None]
        if not with_grad:
            return
        moments = [self.optimizer.state.get(p, {}) for p in with_grad]
        step = moments[-1]["step"] + 1 if "step" in moments[-1] else 1.0  # a tensor stays a tensor
        sample = concatenated_adamw_stats(with_grad, [p.grad for p in with_grad], [s.get("exp_avg") for s in moments],
                                          [s.get("exp_avg_sq") for s in moments], hp.beta1, hp.beta2, hp.eps, step)
        self.stat_sums = sample if self.stat_sums is None else self.stat_sums + sample.to(self.stat_sums.device)
        self.clipped_count += int(clipped)
        self.stats_count += 1

    def _interval_stats(self) -> dict[str, float]:
        """The interval's summed statistics on the host (one transfer), with the clip count."""
        if self.stat_sums is None:
            return {}
        return {**dict(zip(STAT_NAMES, self.stat_sums.tolist())), "clipped": float(self.clipped_count)}

    def _decide(self) -> bool:
        """One decision; returns whether it restored a checkpoint."""
        progress = self.step_index / self.total_steps
        train = float(np.mean(self.interval_losses)) if self.interval_losses else None
        feats = self.tracker.features(progress, self._interval_stats(), self.stats_count, train, self.valid,
                                      self.hparams, self.valid_is_new)
        self.stat_sums, self.stats_count, self.clipped_count = None, 0, 0
        self.interval_losses, self.valid_is_new = [], False
        obs = torch.as_tensor(to_vector(feats))[None]
        with run_threads():  # the decision the engine would make, whatever the loop's thread count
            action, self.state = self.agent.act(obs, self.state, torch.zeros(1), self.greedy, self.generator,
                                                mask=self.mask)
        action = tuple(action[0].tolist())  # the policy runs on the CPU: no device transfer
        self.tracker.prev_action = action
        self.hparams, code = apply_action(self.hparams, action)
        kind, register = restart_kind(code)
        if kind == "save":
            saved = snapshot(self.model, self.optimizer, self.clipper)
            self.tracker.registers[register] = Register(saved, self.tracker.last_train, progress)
        elif kind == "load":  # the mask allows a load only from a filled register
            restore(self.tracker.registers[register].state, self.model, self.optimizer, self.clipper)
        apply_hparams(self.optimizer, self.hparams, self.group_scales)
        if self.divergence_guard.active:
            self.divergence_guard.offer(self._parts(), self.hparams)
        self.history.append({"step": self.step_index, **self.hparams.as_dict(), "restart": kind, "register": register,
                             "guard_returns": self.guard_returns})
        if self.writer is not None:
            from lhopt_cli.support.tensorboard_log import log_scalars

            used = self.hparams.lr * self.protocol.lr_factor(self.step_index, self.total_steps)
            log_scalars(self.writer, "lhopt", {**self.hparams.as_dict(), "lr_used": used,
                                               "guard_returns": self.guard_returns,
                                               "restart": {"none": 0, "save": 1, "load": 2}.get(kind, 0)},
                        self.step_index)
        return kind == "load"

    def _return_to_guard_point(self, stall: bool = False) -> None:
        """Back to the guard point (after a stall: the run's start) with half the smaller lr."""
        self.hparams = self.divergence_guard.return_to_point(self._parts(), self.hparams, stall=stall)
        apply_hparams(self.optimizer, self.hparams, self.group_scales)


__all__ = ["Controller", "ControllerMisuseWarning", "PolicyFileError", "ProtocolError", "default_policy_path"]
