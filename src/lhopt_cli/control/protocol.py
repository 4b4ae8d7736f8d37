"""The observation protocol: how a run is observed and when the policy acts.

A policy's features only mean what they meant in meta-training if every run it drives is
observed the same way: the same rule for its decision steps, the same statistics cadence, the
same validation cadence and the same parameter count in the sqrt(numel)-scaled cosines. The
policy file carries its protocol; meta-training episodes, `lhopt evaluate` and `Controller` all
take it from there, and a setting that contradicts it is refused (ProtocolError).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from lhopt_cli.inner.schedules import SCHEDULES, lr_multiplier

PARAMETER_COUNTS = ("all", "non_embedding")
LIMIT = 100_000  # most decisions, statistics spacing or validation points a run can have
# fields a file may lack: it was written before they existed
LEGACY_DEFAULTS = {"min_interval": 1, "lr_decay": "constant"}


class ProtocolError(ValueError):
    """A setting that contradicts the policy's observation protocol (one line)."""


@dataclass(frozen=True)
class ObservationProtocol:
    """decisions: decisions per run at evaluation (meta-training samples its own count per
    episode; the spacing rule is the same); stats_every: optimizer statistics every k-th step,
    and always at the last step of an interval; eval_points: validations per run at evenly
    spaced steps (Task.eval_steps), besides step 0; parameter_count: the N in the
    sqrt(N)-scaled cosine features, all trainable parameters or all but embeddings;
    min_interval: the fewest steps between two decisions, so a short run gets fewer decisions
    (decision_steps; files written before it existed act every step they may: 1); lr_decay: a
    baseline schedule (inner/schedules.py) multiplying the learning rate the policy sets, at
    every step, f(step / total steps): the policy chooses the scale, the decay anneals it
    (`constant`: none, as in files written before it existed; chosen on the validation suites,
    docs/results.md)."""

    decisions: int = 64
    stats_every: int = 4
    eval_points: int = 25
    parameter_count: str = "all"
    min_interval: int = 1
    lr_decay: str = "constant"

    def __post_init__(self):
        for name in ("decisions", "stats_every", "eval_points", "min_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LIMIT:
                raise ProtocolError(f"observation protocol: {name} must be an integer from 1 to {LIMIT} "
                                    f"(got {value!r})")
        if not isinstance(self.parameter_count, str) or self.parameter_count not in PARAMETER_COUNTS:
            raise ProtocolError(f"observation protocol: parameter_count must be one of {', '.join(PARAMETER_COUNTS)} "
                                f"(got {self.parameter_count!r})")
        if not isinstance(self.lr_decay, str) or self.lr_decay not in SCHEDULES:
            raise ProtocolError(f"observation protocol: lr_decay must be one of {', '.join(SCHEDULES)} "
                                f"(got {self.lr_decay!r})")

    def lr_factor(self, step: int, total_steps: int) -> float:
        """The decay's multiplier on the policy's learning rate for the step taken at `step`
        (0-based) of `total_steps`: 1.0 throughout for `constant`."""
        return 1.0 if self.lr_decay == "constant" else lr_multiplier(self.lr_decay, step, total_steps)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values, complete: bool = True) -> "ObservationProtocol":
        """From plain data (a policy file's `protocol`); `complete=False` fills missing fields
        with the defaults. Raises ProtocolError for anything else than a dict of valid fields."""
        if not isinstance(values, dict):
            raise ProtocolError(f"observation protocol: expected a mapping of its fields, got {type(values).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in values if k not in known)
        if unknown:
            raise ProtocolError(f"observation protocol: unknown key '{unknown[0]}'")
        missing = [k for k in known if k not in values and k not in LEGACY_DEFAULTS]
        if complete and missing:
            raise ProtocolError(f"observation protocol: missing key '{missing[0]}'")
        return cls(**{**(LEGACY_DEFAULTS if complete else {}), **values})

    @classmethod
    def from_training_config(cls, config: dict) -> "ObservationProtocol":
        """The protocol of a policy file written without one: read off the config that trained
        it. Configs from before the protocol keys existed validated the family at its own
        eval_points (14 by default) and counted parameters without embeddings."""
        controller = config.get("controller") or {}
        family = config.get("task_family") or {}
        legacy = "eval_points" not in controller
        try:
            return cls(decisions=int(controller.get("eval_decisions", 64)), stats_every=int(controller.get("stats_every", 4)),
                       eval_points=int(family.get("eval_points", 14) if legacy else controller["eval_points"]),
                       parameter_count="non_embedding" if legacy else str(controller.get("parameter_count", "all")))
        except (TypeError, ValueError) as err:
            raise ProtocolError(f"observation protocol: the training config does not give one ({err})") from None

    def check(self, source: str, **settings) -> None:
        """Raise ProtocolError if a setting given (not None) is invalid or differs from the protocol."""
        for name, value in settings.items():
            if value is None:
                continue
            try:
                replace(self, **{name: value})
            except ProtocolError as err:
                raise ProtocolError(f"{source}: {str(err).removeprefix('observation protocol: ')}") from None
            if value != getattr(self, name):
                raise ProtocolError(f"{source}: {name}={value} contradicts the policy's observation protocol "
                                    f"({name}={getattr(self, name)}); leave it unset")


def decision_steps(total_steps: int, decisions: int, min_interval: int = 1) -> list[int]:
    """The steps at which the policy acts in a run of `total_steps`: `decisions` of them, fewer
    where the run is too short for intervals of `min_interval` steps (at least one, at most
    total_steps - 1), evenly spaced strictly inside the run. Before each one the interval since
    the previous decision is summarised; the first interval starts at step 0."""
    fitting = int(total_steps) // max(int(min_interval), 1) - 1  # decisions + 1 intervals of min_interval
    count = max(min(int(decisions), fitting, int(total_steps) - 1), 1)
    return [int(b) for b in np.unique(np.linspace(0, total_steps, count + 2).round())][1:-1]
