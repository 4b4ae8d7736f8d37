"""The Controller's state format: what Controller.state_dict() writes, and the whole-state check
that load_state_dict() makes before anything changes.

The state is plain data and tensors (torch.save / torch.load(weights_only=True) keep it): the
step, the policy's recurrent state, the feature histories, the registers with their snapshots,
the clipper, the hyperparameters with the param groups' ratios, the action sampler, the guard's.
"""
from __future__ import annotations

import math

import torch

from lhopt_cli.control.features import FeatureTracker, Register
from lhopt_cli.inner.optim import GROUP_KEYS, HParams, RollingMaxClipper, check_runnable, group_hparams
from lhopt_cli.inner.stats import STAT_NAMES
from lhopt_cli.loop.controller_guard import ControllerGuard

FORMAT = "lhopt-controller"
# The keys a state needs (checked before anything changes)
STATE_KEYS = ("format", "total_steps", "step_index", "recurrent", "generator", "hparams", "group_scales", "clipper",
              "valid", "valid_is_new", "stats", "stats_count", "interval_losses", "history", "tracker")
def _check_snapshot(ctrl, snap, where: str) -> None:
    """ValueError unless a saved snapshot (a guard point, a restart register) fits the attached
    model and optimizer: the model's tensors by name and shape, finite; as many param groups."""
    if snap is None:
        return
    state = snap["state"] if "state" in snap else snap
    if "hparams" in snap:
        check_runnable(snap["hparams"], f"its {where}'s ")
    if ctrl.model is not None:
        mine = ctrl.model.state_dict()
        saved = state["model"]
        if set(saved) != set(mine) or any(not torch.is_tensor(saved[k]) or saved[k].shape != mine[k].shape
                                          for k in mine):
            raise ValueError(f"its {where} holds another network's weights")
        if any(t.is_floating_point() and not torch.isfinite(t).all() for t in saved.values()):
            raise ValueError(f"its {where} holds weights that are not finite")
    if len(state["optimizer"]["param_groups"]) != len(ctrl.optimizer.param_groups):
        raise ValueError(f"its {where} holds another optimizer's state")


def capture(ctrl) -> dict:
    """The attached Controller `ctrl`'s state as a dict (Controller.state_dict's format, version 1)."""
    t = ctrl.tracker
    registers = [None if r is None else {"state": r.state, "loss": r.loss, "progress": r.progress}
                 for r in t.registers]
    return {"format": FORMAT, "version": 1, "total_steps": ctrl.total_steps,
            "policy_sha256": ctrl.policy_sha256,
            "step_index": ctrl.step_index, "recurrent": [x.clone() for x in ctrl.state],
            "generator": ctrl.generator.get_state(), "hparams": ctrl.hparams.as_dict(),
            "group_scales": [dict(g) for g in ctrl.group_scales], "clipper": ctrl.clipper.state_dict(),
            "valid": ctrl.valid, "valid_is_new": ctrl.valid_is_new, "stats": ctrl._interval_stats(),
            "stats_count": ctrl.stats_count, "interval_losses": list(ctrl.interval_losses),
            "history": [dict(row) for row in ctrl.history],
            "tracker": {"start": t.start.as_dict(), "num_params": t.num_params,
                        "history": {k: list(v) for k, v in t.history.items()}, "last_train": t.last_train,
                        "prev_action": None if t.prev_action is None else list(t.prev_action),
                        "registers": registers},
            "guard": ctrl.divergence_guard.state_dict()}


def check_header(state, total_steps: int) -> None:
    """Raises ValueError for a dict that is not a Controller's, lacks a key, or belongs to a run
    of another length."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError("not a Controller state (expected the dict Controller.state_dict() returns)")
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise ValueError(f"not a whole Controller state (missing {', '.join(missing)}); nothing was changed")
    if int(state["total_steps"]) != total_steps:
        raise ValueError(f"the saved run had total_steps={state['total_steps']}, this attach() says "
                         f"{total_steps}: attach with the saved run's length")


def read(ctrl, state: dict) -> dict:
    """The attributes `state` restores on the attached Controller `ctrl`, built without touching
    it. Raises ValueError (a state of another policy or network, values AdamW cannot run with,
    a step outside the run) or KeyError/TypeError/IndexError/RuntimeError (a malformed dict)."""
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
    if saved_policy and ctrl.policy_sha256 and saved_policy != ctrl.policy_sha256:
        raise ValueError(f"saved under another policy (sha256 {saved_policy[:12]}, this one "
                         f"{ctrl.policy_sha256[:12]}); load it into a Controller of that policy file")
    fresh = ctrl.agent.initial_state(1)
    if len(new["state"]) != len(fresh) or any(a.shape != b.shape for a, b in zip(new["state"], fresh)):
        raise ValueError("its recurrent state does not fit this policy's network (another policy's)")
    if len(new["tracker"].registers) != len(ctrl.tracker.registers) or \
            set(new["tracker"].history) != set(ctrl.tracker.history):
        raise ValueError("its feature tracker lacks registers or histories this policy reads")
    if not 0 <= new["step_index"] <= ctrl.total_steps:
        raise ValueError(f"its step {new['step_index']} lies outside the run's 0..{ctrl.total_steps}")
    if isinstance(state["step_index"], bool) or not isinstance(state["step_index"], int):
        raise ValueError(f"its step {state['step_index']!r} is not a whole number")
    values = new["hparams"].as_dict()
    check_runnable(values, "its ")
    scales = [float(v) for group in new["group_scales"] for v in group.values()]
    if not all(math.isfinite(v) and v >= 0 for v in scales):
        raise ValueError("its param groups' ratios are not finite and non-negative")
    for i, group in enumerate(new["group_scales"]):  # what each group runs with, not only the reference
        if set(group) != set(GROUP_KEYS):
            raise ValueError(f"its param group {i} ratios hold {sorted(group)}, not {list(GROUP_KEYS)}")
        applied = group_hparams(new["hparams"], group).as_dict()
        check_runnable({**applied, "eps": applied["eps"] if group["eps"] else 1e-8}, f"its param group {i}'s ")
    if not all(torch.isfinite(x).all() for x in new["state"]):
        raise ValueError("its recurrent state is not finite")
    if len(new["group_scales"]) != len(ctrl.optimizer.param_groups):
        raise ValueError(f"{len(new['group_scales'])} param groups saved, the optimizer has "
                         f"{len(ctrl.optimizer.param_groups)}")
    if not (math.isfinite(clipper.rolling_max) and clipper.rolling_max >= 0):
        raise ValueError(f"its clipping state {clipper.rolling_max!r} is not a finite number >= 0")
    for k, register in enumerate(new["tracker"].registers):
        if register is not None:
            if not (isinstance(register.loss, (int, float)) and not isinstance(register.loss, bool)
                    and isinstance(register.progress, (int, float)) and 0 <= register.progress <= 1):
                raise ValueError(f"its restart register {k} holds a loss or progress that is not a number of a run")
            _check_snapshot(ctrl, register.state, f"restart register {k}")
    saved_guard = state.get("guard") or {}
    for name in ("point", "offered", "start"):
        _check_snapshot(ctrl, saved_guard.get(name), f"guard's {name}")
    if "point" in saved_guard:  # a state without one keeps the guard attach() made
        guard = ControllerGuard(active=False)
        guard.active = ctrl.divergence_guard.active
        guard.load_state_dict(saved_guard)
        new["divergence_guard"] = guard
    return new


__all__ = ["STATE_KEYS", "capture", "check_header", "read"]
