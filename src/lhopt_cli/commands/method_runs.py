"""The runs `lhopt evaluate` compares beside the grid (the policy, a replayed schedule, the extra
optimizers), one seed each, as jobs for the executor's worker processes.

A job carries only what names its run (the task's JSON, the seed, the policy file), so it runs
the same in this process or in a worker: every run is on the runs' thread count (support/threads.py)
and each seed's run is on its own, so neither the workers nor the order changes a number.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from lhopt_cli.config.compose import ConfigError

# the comparators that need no tuning, each at its own documented defaults (docs/method.md section 8)
EXTRA_BASELINES = ("schedulefree", "prodigy", "dadapt_adam", "dog", "mechanic", "hypergradient", "range_test")


def make_extra_optimizer(name: str):
    """An extra baseline's optimizer at its documented defaults: a function params -> optimizer
    (range_test is a whole run of its own: inner/range_test.py). Raises ConfigError for a name not
    in EXTRA_BASELINES.

    schedulefree: AdamWScheduleFree, lr 0.0025, no warmup; prodigy: Prodigy, lr 1.0;
    dadapt_adam: D-Adaptation's DAdaptAdam, lr 1.0, decoupled weight decay 0.01 (AdamW's);
    dog: DoG (Ivgi et al. 2023), lr 1.0, reps_rel 1e-6, evaluated at its polynomial decay average
    (gamma 8, inner/averaging.py); mechanic: mechanic-pytorch's mechanize(AdamW), lr 1.0 as its
    README writes it; hypergradient: AdamW with Adam-HD's lr update (inner/hypergradient.py)."""
    if name == "schedulefree":
        from schedulefree import AdamWScheduleFree

        return lambda params: AdamWScheduleFree(params, lr=0.0025, warmup_steps=0)
    if name == "prodigy":
        from prodigyopt import Prodigy

        return lambda params: Prodigy(params, lr=1.0)
    if name == "dadapt_adam":
        from dadaptation import DAdaptAdam

        def dadapt_adam(params):
            with contextlib.redirect_stdout(io.StringIO()):  # it prints that the decay is decoupled
                return DAdaptAdam(params, lr=1.0, decouple=True, weight_decay=1e-2)

        return dadapt_adam
    if name == "dog":
        from dog import DoG

        from lhopt_cli.inner.averaging import IterateAveraged

        def averaged_dog(params):
            params = list(params)
            return IterateAveraged(DoG(params, lr=1.0), params)

        return averaged_dog
    if name == "mechanic":
        import torch
        from mechanic_pytorch import mechanize

        return lambda params: mechanize(torch.optim.AdamW)(params, lr=1.0)
    if name == "hypergradient":
        from lhopt_cli.inner.hypergradient import HypergradientAdamW

        return lambda params: HypergradientAdamW(params)
    if name == "range_test":
        raise ConfigError("range_test is a run of its own (inner/range_test.range_test_run), not an optimizer")
    raise ConfigError(f"unknown extra baseline '{name}'; known: {', '.join(EXTRA_BASELINES)}")


@dataclass(frozen=True)
class MethodRun:
    """One seed of one method on one task member.

    method: "lhopt" (the policy at `policy_path`, `greedy`, `guard`), "replay" (the schedule file
    at `replay_path`) or an extra baseline's name; task_json: the task config as sorted JSON."""
    member: str
    method: str
    task_json: str
    seed: int
    policy_path: str = ""
    greedy: bool = True
    guard: bool = True
    replay_path: str = ""


_POLICIES: dict[str, tuple] = {}  # (agent, protocol) per policy file, once per process


def _policy(path: str) -> tuple:
    if path not in _POLICIES:
        from lhopt_cli.control.checkpoint import load_policy, policy_protocol

        agent, meta = load_policy(Path(path))
        _POLICIES[path] = (agent, policy_protocol(meta))
    return _POLICIES[path]


def execute(job: MethodRun):
    """Run `job`: a control.rollout.PolicyRun (the result, and the decisions for the policy)."""
    from lhopt_cli.commands.baseline_grid import cached_task
    from lhopt_cli.control.rollout import PolicyRun, run_policy
    from lhopt_cli.inner import train_one_epoch

    task = cached_task(job.task_json)
    if job.method == "lhopt":
        agent, protocol = _policy(job.policy_path)
        (run,) = run_policy(agent, json.loads(job.task_json), [job.seed], protocol, greedy=job.greedy, guard=job.guard)
        return run
    if job.method == "replay":
        from lhopt_cli.loop.replay import ReplayHook
        from lhopt_cli.loop.schedule_file import hparams_at, read_schedule

        replay = read_schedule(job.replay_path)
        return PolicyRun(train_one_epoch(task, job.seed, ReplayHook(replay), hparams_at(replay, 0, task.total_steps)))
    if job.method == "range_test":
        from lhopt_cli.inner.range_test import range_test_run

        return PolicyRun(range_test_run(task, job.seed))
    return PolicyRun(train_one_epoch(task, job.seed, make_optimizer=make_extra_optimizer(job.method)))
