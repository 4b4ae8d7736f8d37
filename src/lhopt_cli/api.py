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
from collections import deque
import operator
import warnings
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .control.actions import EVAL_START, apply_action, restart_kind
from .control.checkpoint import PolicyFileError, load_policy, policy_protocol
from .control.features import FeatureTracker, Register, no_restart_mask, to_vector
from .control.protocol import ProtocolError, decision_steps
from .threads import run_threads
from .inner.guard import START_STEPS, guarded_hparams, healthy, stalled, train_median
from .inner.hooks import clone_tree, restore, snapshot
from .inner.optim import ADAMW_KEYS, HParams, RollingMaxClipper, apply_hparams, group_scales, refuse_coupled_decay
from .inner.stats import STAT_NAMES, foreach_adamw_stats
from .tasks.base import eval_steps

# The keys of a Controller.state_dict() that load_state_dict needs (checked before anything changes)
STATE_KEYS = ("format", "total_steps", "step_index", "recurrent", "generator", "hparams", "group_scales", "clipper",
              "valid", "valid_is_new", "stats", "stats_count", "interval_losses", "history", "tracker")

MISUSES = ("lr", "valid", "extra_valid", "grad", "weight_decay")  # the kinds ControllerMisuseWarning tells, each once


class ControllerMisuseWarning(UserWarning):
    """A training loop that works against the Controller, said once per kind and run: another
    scheduler or code changed the learning rate between two steps (the Controller sets it; a
    StepLR beside it fights it), no validation loss at the protocol's validation steps (the
    policy was trained to see one there), one at another step (its decisions then differ from
    `lhopt evaluate`'s), a step() with no parameter holding a gradient (called
    before loss.backward(), or after zero_grad()), and at attach() a weight decay of 0 in every
    param group (relative actions keep it at 0)."""


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
            from .tensorboard_log import summary_writer

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
        # the divergence guard's point (held: a finite loss was seen there) and the one offered at
        # the last decision (held once the next loss is finite); the start always holds
        self.guard_point = self._guard_state() if self._guarding else None
        self.start_point = self.guard_point  # kept apart from the point's recycled tensors: a stall goes back here
        self.guard_offered, self.guard_returns = None, 0
        self._spare = None  # a former guard point whose tensors the next one is written into
        self.first_loss: float | None = None  # the run's first training loss: the guard's yardstick
        self.initial_valid: float | None = None  # the validation loss at step 0: a stall's yardstick
        # the stall rule's training losses (inner/guard.py): the run's first and latest START_STEPS
        self.first_train: list[float] = []
        self.latest_train: deque[float] = deque(maxlen=START_STEPS)
        self._validation_set = set(self.validation_steps)
        self._lr_left: float | None = None  # the lr the last step() left in the optimizer: another writer shows
        self._warned: set[str] = set()
        if all(float(group["weight_decay"]) == 0.0 for group in optimizer.param_groups):
            self._warn_once("weight_decay", "every param group has weight_decay 0: the policy's actions are relative, "
                            "so a zero stays zero and its weight-decay actions do nothing; give AdamW its default "
                            "0.01 (the Hugging Face Trainer's default is 0.0) to let the policy set it", stacklevel=3)
        return self

    @property
    def _guarding(self) -> bool:
        return self.guard and self.model is not None  # without the model nothing can be restored

    def _guard_state(self, reuse: dict | None = None) -> dict:
        """The state now as a guard point, written into the tensors of `reuse` (a point no
        longer needed) so that a decision allocates nothing."""
        into = reuse["state"] if reuse is not None else None
        return {"state": snapshot(self.model, self.optimizer, self.clipper, into=into), "hparams": self.hparams.as_dict()}

    def _return_to_guard_point(self, stall: bool = False) -> None:
        """Back to the guard point (after a stall: to the run's start, which then remembers the
        halved lr) with half the smaller learning rate (inner/guard.py)."""
        if stall:
            self.guard_point = self.start_point
        point, self._spare, self.guard_offered = self.guard_point, self.guard_offered, None
        restore(point["state"], self.model, self.optimizer, self.clipper)
        self.hparams = guarded_hparams(self.hparams, HParams(**point["hparams"]))
        if stall:
            self.start_point = self.guard_point = {**point, "hparams": self.hparams.as_dict()}
        apply_hparams(self.optimizer, self.hparams, self.group_scales)
        self.guard_returns += 1

    def write_schedule(self, path: str | Path, task: str = "user") -> Path:
        """Write the hyperparameters this run used so far as a schedule file (schedule_file.py;
        strict JSON): the start, each decision's values at its progress, the policy's lr decay,
        the param groups' ratios, the policy file's SHA-256 where known. `ReplaySchedule` plays
        it back on another run, of any length. Raises RuntimeError before attach()."""
        from .schedule_file import build_schedule, write_schedule

        if self.optimizer is None:
            raise RuntimeError("call attach(optimizer, total_steps=...) before write_schedule()")
        ratios = [{"lr": g["lr"], "weight_decay": g["weight_decay"]} for g in self.group_scales]
        schedule = build_schedule(self.tracker.start, self.history, self.total_steps, self.protocol.lr_decay, task,
                                  self.seed, self.policy_sha256, ratios)
        return write_schedule(path, schedule)

    # --- checkpoint and resume ---------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs to decide exactly as the uninterrupted one: the step,
        the policy's recurrent state, the feature histories, the registers with their snapshots,
        the clipper, the hyperparameters with the param groups' ratios, the action sampler.
        Plain data and tensors (torch.save / torch.load(weights_only=True) keep it). Save it with
        the model's and the optimizer's state dicts. Raises RuntimeError before attach()."""
        if self.optimizer is None:
            raise RuntimeError("call attach(optimizer, total_steps=...) before state_dict()")
        t = self.tracker
        registers = [None if r is None else {"state": r.state, "loss": r.loss, "progress": r.progress}
                     for r in t.registers]
        return {"format": "lhopt-controller", "version": 1, "total_steps": self.total_steps,
                "policy_sha256": self.policy_sha256,
                "step_index": self.step_index, "recurrent": [x.clone() for x in self.state],
                "generator": self.generator.get_state(), "hparams": self.hparams.as_dict(),
                "group_scales": [dict(g) for g in self.group_scales], "clipper": self.clipper.state_dict(),
                "valid": self.valid, "valid_is_new": self.valid_is_new, "stats": self._interval_stats(),
                "stats_count": self.stats_count, "interval_losses": list(self.interval_losses),
                "history": [dict(row) for row in self.history],
                "tracker": {"start": t.start.as_dict(), "num_params": t.num_params,
                            "history": {k: list(v) for k, v in t.history.items()}, "last_train": t.last_train,
                            "prev_action": None if t.prev_action is None else list(t.prev_action),
                            "registers": registers},
                # copies: the controller writes later points into these tensors in place
                "guard": {"point": clone_tree(self.guard_point), "offered": clone_tree(self.guard_offered),
                          "start": None if self.start_point is self.guard_point else clone_tree(self.start_point),
                          "returns": self.guard_returns,
                          "first_loss": self.first_loss, "initial_valid": self.initial_valid,
                          "first_train": list(self.first_train), "latest_train": list(self.latest_train)}}

    def load_state_dict(self, state: dict) -> None:
        """Continue a run from `state_dict()`: call after attach() with the restored optimizer (and
        model) and the same total_steps. Raises ValueError for a state that is not a whole
        Controller's (checked before anything changes: a truncated or foreign dict leaves the
        Controller as it was) or belongs to a run of another length, RuntimeError before attach()."""
        if self.optimizer is None:
            raise RuntimeError("call attach(optimizer, total_steps=...) before load_state_dict()")
        if not isinstance(state, dict) or state.get("format") != "lhopt-controller":
            raise ValueError("not a Controller state (expected the dict Controller.state_dict() returns)")
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"not a whole Controller state (missing {', '.join(missing)}); nothing was changed")
        if int(state["total_steps"]) != self.total_steps:
            raise ValueError(f"the saved run had total_steps={state['total_steps']}, this attach() says "
                             f"{self.total_steps}: attach with the saved run's length")
        try:  # every value read into new objects first: a state that does not fit changes nothing
            new = self._read_state(state)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as err:
            raise ValueError(f"not a whole Controller state ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:240] if str(err) else 'malformed'}); nothing was changed") from None
        for name, value in new.items():
            setattr(self, name, value)
        apply_hparams(self.optimizer, self.hparams, self.group_scales)
        self._lr_left = None  # the restored optimizer's lr is the Controller's own

    def _read_state(self, state: dict) -> dict:
        """The attributes a `state_dict()` restores, built without touching this Controller."""
        generator = torch.Generator()
        generator.set_state(state["generator"])
        clipper = RollingMaxClipper()
        clipper.load_state_dict(state["clipper"])
        stats = dict(state["stats"])
        clipped = int(stats.pop("clipped", 0))
        t = state["tracker"]
        new = {"step_index": int(state["step_index"]), "state": tuple(x.clone() for x in state["recurrent"]),
               "generator": generator, "hparams": HParams(**state["hparams"]),
               "group_scales": [dict(g) for g in state["group_scales"]], "clipper": clipper,
               "valid": float(state["valid"]), "valid_is_new": bool(state["valid_is_new"]), "clipped_count": clipped,
               "stat_sums": torch.tensor([stats[n] for n in STAT_NAMES]) if stats else None,
               "stats_count": int(state["stats_count"]), "interval_losses": list(state["interval_losses"]),
               "history": [dict(r) for r in state["history"]],
               "tracker": FeatureTracker(HParams(**t["start"]), int(t["num_params"]),
                                         history={k: list(v) for k, v in t["history"].items()},
                                         last_train=float(t["last_train"]),
                                         prev_action=None if t["prev_action"] is None else tuple(t["prev_action"]),
                                         registers=[None if r is None else Register(r["state"], r["loss"], r["progress"])
                                                    for r in t["registers"]])}
        saved_policy = state.get("policy_sha256")
        if saved_policy and self.policy_sha256 and saved_policy != self.policy_sha256:
            raise ValueError(f"saved under another policy (sha256 {saved_policy[:12]}, this one "
                             f"{self.policy_sha256[:12]}); load it into a Controller of that policy file")
        fresh = self.agent.initial_state(1)
        if len(new["state"]) != len(fresh) or any(a.shape != b.shape for a, b in zip(new["state"], fresh)):
            raise ValueError("its recurrent state does not fit this policy's network (another policy's)")
        if len(new["tracker"].registers) != len(self.tracker.registers) or \
                set(new["tracker"].history) != set(self.tracker.history):
            raise ValueError("its feature tracker lacks registers or histories this policy reads")
        if not 0 <= new["step_index"] <= self.total_steps:
            raise ValueError(f"its step {new['step_index']} lies outside the run's 0..{self.total_steps}")
        if isinstance(state["step_index"], bool) or not isinstance(state["step_index"], int):
            raise ValueError(f"its step {state['step_index']!r} is not a whole number")
        values = new["hparams"].as_dict()
        ranges = {"lr": (0, math.inf, False), "beta1": (0, 1, True), "beta2": (0, 1, True), "eps": (0, math.inf, False),
                  "weight_decay": (0, math.inf, True), "clip": (0, math.inf, False)}
        for name, (low, high, closed) in ranges.items():
            value = float(values.get(name, 1.0))
            if not (math.isfinite(value) and (value >= low if closed else value > low) and value < high):
                raise ValueError(f"its {name} {value:g} is not one AdamW can run with")
        scales = [float(v) for group in new["group_scales"] for v in group.values()]
        if not all(math.isfinite(v) and v >= 0 for v in scales):
            raise ValueError("its param groups' ratios are not finite and non-negative")
        if not all(torch.isfinite(x).all() for x in new["state"]):
            raise ValueError("its recurrent state is not finite")
        if len(new["group_scales"]) != len(self.optimizer.param_groups):
            raise ValueError(f"{len(new['group_scales'])} param groups saved, the optimizer has "
                             f"{len(self.optimizer.param_groups)}")
        guard = state.get("guard") or {}
        if "point" in guard:
            new.update(guard_point=guard["point"], guard_offered=guard["offered"], guard_returns=int(guard["returns"]),
                       first_loss=guard.get("first_loss"), initial_valid=guard.get("initial_valid"),
                       start_point=guard["point"] if guard.get("start") is None else guard["start"],
                       # a state from before the stall rule read training losses: the validation loss alone decides
                       first_train=[float(v) for v in guard.get("first_train", [])],
                       latest_train=deque((float(v) for v in guard.get("latest_train", [])), maxlen=START_STEPS))
            losses = new["first_train"] + list(new["latest_train"])
            if not all(math.isfinite(v) for v in losses) or len(new["first_train"]) > START_STEPS:
                raise ValueError("its guard's training losses are not finite, or too many")
        return new

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
        if self.optimizer is not None and self.step_index < self.total_steps and len(self._warned) < len(MISUSES):
            self._check_loop(valid_loss)
        taken = self._step(loss, valid_loss)
        self._lr_left = float(self.optimizer.param_groups[0]["lr"])
        return taken

    def reassert_hparams(self) -> None:
        """Write the controller's hyperparameters (its lr decay included) back into the optimizer
        over whatever a framework's own scheduler wrote since the last step(); the framework
        callbacks call it before each step(), so their schedulers are not taken for misuse."""
        apply_hparams(self.optimizer, self._decayed(), self.group_scales)
        self._lr_left = float(self.optimizer.param_groups[0]["lr"])

    def _decayed(self) -> HParams:
        """The hyperparameters the last step taken used: the policy's lr times the decay there."""
        if self.protocol.lr_decay == "constant" or self.step_index == 0:
            return self.hparams
        return replace(self.hparams, lr=self.hparams.lr * self.protocol.lr_factor(self.step_index - 1, self.total_steps))

    def _warn_once(self, kind: str, message: str, stacklevel: int = 4) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, ControllerMisuseWarning, stacklevel=stacklevel)

    def _check_loop(self, valid_loss) -> None:
        """The loop's misuses (ControllerMisuseWarning, once per kind): the lr changed since the
        last step() by something else, no valid_loss at a validation step, no gradient at all."""
        lr = float(self.optimizer.param_groups[0]["lr"])
        if ("lr" not in self._warned and self._lr_left is not None
                and not math.isclose(lr, self._lr_left, rel_tol=1e-9, abs_tol=0.0)):
            self._warn_once("lr", f"the learning rate changed between two Controller.step() calls ({self._lr_left:.3g} "
                            f"-> {lr:.3g}) by something else, e.g. a torch lr scheduler: the Controller sets the lr "
                            "(the policy's decay included); remove the other scheduler")
        if "valid" not in self._warned and valid_loss is None and self.step_index in self._validation_set:
            self._warn_once("valid", f"no valid_loss at step {self.step_index}, one of ctrl.validation_steps: the "
                            "policy was trained to see a validation loss there; without it its decisions "
                            "use a stale one and the divergence guard cannot see a stall")
        if "extra_valid" not in self._warned and valid_loss is not None and self.step_index not in self._validation_set:
            self._warn_once("extra_valid", f"a valid_loss at step {self.step_index}, not one of ctrl.validation_steps: "
                            "the policy was trained to see one only there, so its decisions now differ from "
                            "`lhopt evaluate`'s; pass None at the other steps")
        if "grad" not in self._warned and all(p.grad is None for p in self.params):  # once said, not looked at again
            self._warn_once("grad", "Controller.step() found no gradient on any parameter: call it after "
                            "loss.backward() and before optimizer.zero_grad()")

    def _step(self, loss: float | torch.Tensor, valid_loss: float | None = None) -> bool:
        """step() without the loop checks."""
        if self.optimizer is None:
            raise RuntimeError("call attach(optimizer, total_steps=...) before step()")
        if self.step_index >= self.total_steps:  # as torch's OneCycleLR: the schedule has ended
            raise RuntimeError(f"step() called {self.step_index + 1} times, but attach() was told total_steps="
                               f"{self.total_steps}: attach again with the run's real number of steps")
        # the engine's order (inner/batched.py): a validation of diverged weights sends the run
        # back and spends this step; then the decision; then this step's loss is checked
        stall = (self._guarding and valid_loss is not None
                 and stalled(float(valid_loss), self.initial_valid, self.step_index, self.total_steps,
                             train_median(self.latest_train), train_median(self.first_train)))
        returned = self._guarding and valid_loss is not None and (stall or not math.isfinite(float(valid_loss)))
        if returned:
            self._return_to_guard_point(stall=stall)
        elif valid_loss is not None:
            self.valid, self.valid_is_new = float(valid_loss), True
            if self.step_index == 0 and self.initial_valid is None:
                self.initial_valid = self.valid
        if torch.is_tensor(loss) and loss.numel() != 1:
            raise ValueError(f"step(loss=...) takes the batch's mean loss (one number), not a tensor of shape "
                             f"{tuple(loss.shape)}")
        # the step's one host transfer: the gradient norm (and the loss, when given as a tensor)
        norm = self.clipper.grad_norm(self.params)
        probe = [x.detach().float().reshape(()) for x in (norm, loss) if torch.is_tensor(x)]
        values = torch.stack([x.to(probe[0].device) for x in probe]).tolist() if probe else []
        norm_value = values.pop(0) if norm is not None else None
        loss_value = values.pop(0) if torch.is_tensor(loss) else float(loss)
        if self.first_loss is None and not returned:
            self.first_loss = loss_value
        # a loss that blew up: the guard sends the run back; without it the step counts and
        # takes no update (the run has diverged, and the loop still ends)
        diverged = not healthy(loss_value, self.first_loss) if self._guarding else not math.isfinite(loss_value)
        if not (returned or diverged) and norm_value is not None and not math.isfinite(norm_value):
            # inf/NaN gradients (a GradScaler's overflow): skip the step and count nothing, as
            # the scaler skips optimizer.step(); the run goes on as if it had not been there
            return False
        restored = self.step_index in self._decision_at and self._decide()
        self.step_index += 1
        if returned or restored:
            return False
        if diverged:
            if self._guarding:
                self._return_to_guard_point()
            return False
        if self.guard_offered is not None:  # a healthy loss at the point offered: it holds
            spare = None if self.guard_point is self.start_point else self.guard_point  # the start is kept
            self._spare, self.guard_point, self.guard_offered = spare, self.guard_offered, None
        self.interval_losses.append(loss_value)
        self.latest_train.append(loss_value)
        if len(self.first_train) < START_STEPS:
            self.first_train.append(loss_value)
        _, clipped = self.clipper(self.params, self.hparams.clip, norm, norm_value)
        if (self.step_index - 1) % self.stats_every == 0 or self.step_index in self._decision_at:
            self._sample_stats(clipped)  # every interval's last step is measured
        if self.protocol.lr_decay != "constant":  # the decay anneals the policy's lr at every step taken
            apply_hparams(self.optimizer, self._decayed(), self.group_scales)
        return True

    @torch.no_grad()
    def _sample_stats(self, clipped: bool) -> None:
        """The engine's statistics, from the moments AdamW is about to compute at this step,
        summed on the parameters' device (foreach kernels, no host transfer)."""
        hp, with_grad = self.hparams, [p for p in self.params if p.grad is not None]
        if not with_grad:
            return
        moments = [self.optimizer.state.get(p, {}) for p in with_grad]
        zeros = [torch.zeros_like(p.grad, dtype=torch.float32) for p in with_grad]
        m = [s["exp_avg"] if "exp_avg" in s else z for s, z in zip(moments, zeros)]
        v = [s["exp_avg_sq"] if "exp_avg_sq" in s else z for s, z in zip(moments, zeros)]
        step = moments[-1]["step"] + 1 if "step" in moments[-1] else 1.0  # a tensor stays a tensor
        sample = foreach_adamw_stats(with_grad, [p.grad for p in with_grad], m, v, hp.beta1, hp.beta2, hp.eps, step)
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
        if self._guarding:  # a point offered before and never held is rewritten in place
            reuse, self._spare = self.guard_offered or self._spare, None
            self.guard_offered = self._guard_state(reuse)
        self.history.append({"step": self.step_index, **self.hparams.as_dict(), "restart": kind, "register": register,
                             "guard_returns": self.guard_returns})
        if self.writer is not None:
            from .tensorboard_log import log_scalars

            used = self.hparams.lr * self.protocol.lr_factor(self.step_index, self.total_steps)
            log_scalars(self.writer, "lhopt", {**self.hparams.as_dict(), "lr_used": used,
                                               "guard_returns": self.guard_returns,
                                               "restart": {"none": 0, "save": 1, "load": 2}.get(kind, 0)},
                        self.step_index)
        return kind == "load"


__all__ = ["Controller", "ControllerMisuseWarning", "PolicyFileError", "ProtocolError", "default_policy_path"]
