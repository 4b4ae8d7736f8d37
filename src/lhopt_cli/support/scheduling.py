"""Pick the way to run many same-task runs, and cut the runs into chunks for workers.

Small models are overhead-bound and gain from batching members in one process; larger ones
are compute-bound and gain only from more processes. The two paths round differently, so
`path=auto` decides by a rule on the task's cost per step, never by a timing; every core then
runs one worker process of that kind.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Sequence, TypeVar

import torch

from lhopt_cli.inner import HParams, train_one_epoch
from lhopt_cli.support.files import atomic_write_text, not_a_regular_file
from lhopt_cli.inner.batched import train_batched
from lhopt_cli.tasks import Task
from lhopt_cli.tasks.data import cache_dir

T = TypeVar("T")
PATHS = ("auto", "single", "batched")


SMALL_JOB_S = 10.0  # below this much single-thread work, worker start-up costs more than it saves


@dataclass(frozen=True)
class Plan:
    path: str  # "single" (one run at a time per worker) or "batched"
    members: int  # runs per chunk
    workers: int
    note: str = ""


def _rate(fn, steps: int, runs: int) -> float:
    start = time.perf_counter()
    fn()
    return steps * runs / (time.perf_counter() - start)


def _probe(task: Task, steps: int) -> Task:
    return task.__class__({**task.cfg, "max_steps": steps, "eval_points": 1})


def single_rate(task: Task, steps: int = 6) -> float:
    """Run-steps per second of one run at a time, at torch's current thread count."""
    probe = _probe(task, steps)
    train_one_epoch(probe, 0, hparams=HParams())  # warm-up
    return _rate(lambda: train_one_epoch(probe, 1, hparams=HParams()), steps, 1)


def batched_rate(task: Task, members: int, steps: int = 6) -> float:
    """Run-steps per second of `members` runs batched in one process."""
    probe = _probe(task, steps)
    train_batched(probe, [0, 1])  # warm-up
    return _rate(lambda: train_batched(probe, list(range(members))), steps, members)


def measured_rates(task: Task, sizes: list[int]) -> tuple[float, dict[int, float]]:
    """One-thread rates of one run and of batches of each size, measured once per task config
    on this machine and kept in the cache folder (measuring costs seconds on larger models)."""
    path = cache_dir() / "calibration.json"
    try:  # a cache that is not a regular file (a link to a device, a FIFO) is not read: measured again
        known = json.loads(path.read_text()) if not_a_regular_file(path) is None else {}
    except (ValueError, UnicodeDecodeError, OSError):  # a damaged cache is measured again
        known = {}
    if not isinstance(known, dict):  # not ours (a list, a number): measured again
        known = {}
    key = f"{torch.__version__}|{task.describe()}"
    entry = known.get(key)
    if not isinstance(entry, dict):
        entry = {}
    # only positive, finite rates are kept; anything else in the entry is measured again
    entry = {k: v for k, v in entry.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf}
    if "single" not in entry:
        entry["single"] = single_rate(task)
    for k in sizes:
        if str(k) not in entry:
            entry[str(k)] = batched_rate(task, k)
    known[key] = entry
    atomic_write_text(path, json.dumps(known))
    return entry["single"], {k: entry[str(k)] for k in sizes}


BATCHED_BELOW_FLOPS = 2e7  # per run-step: below it a step is overhead-bound and batching repays (docs/results.md)


def choose(task: Task, runs: int, workers: int, path: str, max_members: int) -> Plan:
    """The path, chunk size and worker count for `runs` runs of `task` on `workers` processes.

    The two paths round differently (vmapped kernels against the module's own), and a batched
    member's rounding can depend on its batch-mates, so the path and the chunks are a rule on the
    task and the config, never a timing or the worker count (docs/method.md): `auto` batches a
    task whose step costs below BATCHED_BELOW_FLOPS (task.flops_per_step), and the runs are cut
    into the fewest even chunks of at most `max_members`. Only the worker count is measured: under
    `auto`, a job too small to repay starting workers (one-thread rates, measured once per task
    config and machine) stays in this process, which changes no result.
    """
    chosen = path
    if path == "auto":
        path = "batched" if task.flops_per_step < BATCHED_BELOW_FLOPS else "single"
    members = 1 if path == "single" else max(1, min(max_members, runs))
    members = max(len(c) for c in chunks(range(runs), members)) if runs else members
    if workers <= 1 or chosen != "auto":  # a path the user named runs on the workers asked for
        return Plan(path, members, workers)
    single, batched = measured_rates(task, [members] if members > 1 else [])
    rate = batched[members] if members > 1 else single
    if runs * task.total_steps / rate / workers < SMALL_JOB_S:
        workers = 1
    return Plan(path, members, workers, f"measured on 1 thread: {rate:.0f} run-steps/s")


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """Split in order into the fewest about-equal chunks of at most `size` (a function of the
    items and `size` alone, so the same runs share a batch whatever the workers)."""
    if size <= 1:
        return [[item] for item in items]
    count = math.ceil(len(items) / size)
    bounds = [round(k * len(items) / count) for k in range(count + 1)]
    return [list(items[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]
