"""Schedules as files: the hyperparameters a policy run used, as a function of progress.

A schedule file (strict JSON) holds the run's start values and the values each decision set, at
the decision's progress (step / total_steps), with the lr decay the policy acted under: at
progress p the values are those of the last point at or before p, the learning rate multiplied by
the decay's factor at p (docs/method.md, section 2). Restarts and the divergence guard's returns
are not part of it: a replay sets hyperparameters, never weights. `lhopt evaluate` writes one per
policy run (`schedule_<task>_s<seed>.json`), `Controller.write_schedule` at the end of a user's
run; `ReplaySchedule` (replay.py) plays one back on any AdamW for a run of any length.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from lhopt_cli.control.actions import BOUNDS
from lhopt_cli.inner.optim import HParams
from lhopt_cli.inner.schedules import SCHEDULES
from lhopt_cli.support.files import atomic_write_text, not_a_regular_file

FORMAT, VERSION = "lhopt-schedule", 1
KEYS = ("lr", "beta1", "beta2", "eps", "weight_decay", "clip")


class ScheduleFileError(ValueError):
    """A schedule file that cannot be read or is not a valid schedule (one line)."""


def build_schedule(start: HParams, decisions: list[dict], total_steps: int, lr_decay: str, task: str, seed: int,
                   policy_sha256: str | None, group_ratios: list[dict] | None = None) -> dict:
    """The schedule of one run: `start` (the values at step 0), `decisions` (rows with `step` and
    the KEYS the decision set, as `ctrl.history` or evaluate's decisions files hold them),
    `total_steps` (the run's length), `lr_decay` (the protocol's decay, 'constant' for none),
    the task's name or parameters, the seed, the policy file's SHA-256, and per param group its
    ratios to the first group (informational: a replay keeps the ratios of its own optimizer)."""
    points = [{"progress": 0.0, **{k: float(getattr(start, k)) for k in KEYS}}]
    for row in decisions:
        points.append({"progress": int(row["step"]) / total_steps, **{k: float(row[k]) for k in KEYS}})
    return {"format": FORMAT, "version": VERSION, "task": task, "seed": int(seed), "policy_sha256": policy_sha256,
            "total_steps": int(total_steps), "lr_decay": lr_decay,
            "group_ratios": group_ratios or [{"lr": 1.0, "weight_decay": 1.0}], "points": points}


def write_schedule(path: str | Path, schedule: dict) -> Path:
    """Write `schedule` as strict JSON (no NaN) through a temporary file and a rename, so a
    reader never sees half a file and a link at `path` is replaced, not followed."""
    path = Path(path)
    text = json.dumps(check_schedule(schedule, str(path)), indent=1, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


MAX_BYTES = 64 * 2**20  # a schedule of a million decisions is about 150 MB of JSON; any real one far less


def read_schedule(path: str | Path) -> dict:
    """The schedule in `path`, checked. Raises ScheduleFileError (one line) for a missing or
    unreadable file, JSON that is not strict, or a schedule with missing or impossible values."""
    reason = not_a_regular_file(path)
    if reason is not None:
        raise ScheduleFileError(f"schedule {path}: {reason}")
    if Path(path).stat().st_size > MAX_BYTES:
        raise ScheduleFileError(f"schedule {path}: {Path(path).stat().st_size:,} bytes, not a schedule file "
                                f"(at most {MAX_BYTES:,})")
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ScheduleFileError(f"schedule {path}: cannot read it ({err.__class__.__name__})") from None

    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    try:
        schedule = json.loads(text, parse_constant=refuse)
    except RecursionError:
        raise ScheduleFileError(f"schedule {path}: nested too deeply to be a schedule") from None
    except ValueError as err:
        if "digits" in str(err):  # Python's limit on integer digits: a number no schedule holds
            raise ScheduleFileError(f"schedule {path}: holds a number of thousands of digits, not a schedule's") from None
        raise ScheduleFileError(f"schedule {path}: not strict JSON ({str(err).splitlines()[0]})") from None
    return check_schedule(schedule, str(path))


def _finite_number(value) -> bool:
    """A JSON number (not a bool) that is a finite float (a 400-digit integer is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def check_schedule(schedule, where: str) -> dict:
    """`schedule` if it is a valid schedule, else ScheduleFileError naming `where` and the fault:
    checked whole (every point, the group ratios) before anything uses it. The values are those
    AdamW can run with, at most the policy's own bounds (lr, eps and weight decay at most 1)."""
    def fail(fault: str):
        raise ScheduleFileError(f"schedule {where}: {fault}")

    if not isinstance(schedule, dict) or schedule.get("format") != FORMAT:
        fail(f"not an lhopt schedule (expected \"format\": \"{FORMAT}\")")
    if schedule.get("version") != VERSION:
        fail(f"version {schedule.get('version')!r} is not {VERSION}")
    total = schedule.get("total_steps")
    if not isinstance(total, int) or isinstance(total, bool) or total < 1:
        fail(f"total_steps must be a positive integer (got {total!r})")
    decay = schedule.get("lr_decay")
    if not isinstance(decay, str) or (decay != "constant" and decay not in SCHEDULES):
        fail(f"unknown lr_decay {str(decay)[:80]!r}; known: {', '.join(dict.fromkeys(['constant', *SCHEDULES]))}")
    ratios = schedule.get("group_ratios", [{"lr": 1.0, "weight_decay": 1.0}])
    if not isinstance(ratios, list) or not ratios or not all(
            isinstance(r, dict) and all(k in r and _finite_number(r[k]) and r[k] >= 0 for k in ("lr", "weight_decay"))
            for r in ratios):
        fail("group_ratios must be a non-empty list of {lr, weight_decay} ratios, each a finite number >= 0")
    points = schedule.get("points")
    if not isinstance(points, list) or not points:
        fail("points must be a non-empty list")
    last = -1.0
    for i, point in enumerate(points):
        if not isinstance(point, dict) or any(k not in point for k in ("progress", *KEYS)):
            fail(f"points[{i}] must hold progress and {', '.join(KEYS)}")
        values = {k: point[k] for k in ("progress", *KEYS)}
        if not all(_finite_number(v) for v in values.values()):
            fail(f"points[{i}] holds a value that is not a finite number")
        values = {k: float(v) for k, v in values.items()}
        if not last <= values["progress"] <= 1.0 or (i == 0 and values["progress"] != 0.0):
            fail(f"points[{i}].progress {values['progress']} out of order (from 0, rising, at most 1)")
        last = values["progress"]
        # the values AdamW can run with, up to the policy's own bounds (control/actions.py)
        ranges = {"lr": 0 <= values["lr"] <= BOUNDS["lr"][1], "beta1": 0 <= values["beta1"] < 1,
                  "beta2": 0 <= values["beta2"] < 1, "eps": 0 < values["eps"] <= BOUNDS["eps"][1],
                  "weight_decay": 0 <= values["weight_decay"] <= BOUNDS["weight_decay"][1],
                  "clip": 0 < values["clip"] <= 1}
        bad = [k for k, ok in ranges.items() if not ok]
        if bad:
            fail(f"points[{i}].{bad[0]} = {values[bad[0]]} is out of range")
    return schedule


def hparams_at(schedule: dict, step: int, total_steps: int) -> HParams:
    """The hyperparameters for the update at `step` (0-based) of a run of `total_steps`: the last
    point at or before progress step / total_steps, its lr times the decay's factor there."""
    progress = step / total_steps
    point = schedule["points"][0]
    for candidate in schedule["points"]:
        if candidate["progress"] > progress:
            break
        point = candidate
    decay = schedule["lr_decay"]
    factor = 1.0 if decay == "constant" else SCHEDULES[decay](progress)
    return HParams(lr=float(point["lr"]) * factor, beta1=float(point["beta1"]), beta2=float(point["beta2"]),
                   eps=float(point["eps"]), weight_decay=float(point["weight_decay"]), clip=float(point["clip"]))
