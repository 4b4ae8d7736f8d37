"""Run a trained policy on one task: one episode per seed, each on its own, from AdamW's defaults,
observed by the policy's observation protocol."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np
import torch

from lhopt_cli.inner.loop import RunResult
from lhopt_cli.support.threads import on_run_threads
from lhopt_cli.tasks.families import TaskFamily
from lhopt_cli.control.env import VecLhoptEnv
from lhopt_cli.control.policy import RecurrentActorCritic
from lhopt_cli.control.protocol import ObservationProtocol


@dataclass
class PolicyRun:
    result: RunResult
    decisions: list[dict] = field(default_factory=list)  # step, hyperparameters, restart per decision


@on_run_threads
def run_policy(agent: RecurrentActorCritic, task_cfg: dict, seeds: list[int], protocol: ObservationProtocol,
               greedy: bool = False, action_seed: int = 0, guard: bool = True,
               progress: Callable[[int, int], None] | None = None) -> list[PolicyRun]:
    """One-epoch runs of `task_cfg` driven by `agent`, one per seed (sampled actions are seeded).

    Each seed runs on its own: batched with others, float rounding differs in the last bits and a
    policy's discrete choices amplify it, so a seed's result would depend on which seeds ran
    beside it. Raises ProtocolError if the task's validation points contradict `protocol`. The
    decision log records the restarts that happened (a save, or a load of a filled register) and
    how often the divergence guard (`guard`, inner/guard.py) has sent the run back so far
    (`guard_returns`). `progress(k, step)`, if given, hears after every decision that the k-th
    seed's run is at inner step `step` (it may go back after a restart)."""
    protocol.check(f"task {task_cfg['name']}", eval_points=task_cfg.get("eval_points"))
    return [_run_one(agent, task_cfg, seed, protocol, greedy, action_seed, guard,
                     None if progress is None else partial(progress, k)) for k, seed in enumerate(seeds)]


def _run_one(agent: RecurrentActorCritic, task_cfg: dict, seed: int, protocol: ObservationProtocol, greedy: bool,
             action_seed: int, guard: bool, progress: Callable[[int], None] | None = None) -> PolicyRun:
    family = TaskFamily({"kinds": {task_cfg["name"]: {}}})  # unused: the episode is fixed
    env = VecLhoptEnv(family, num_envs=1, protocol=protocol.as_dict(), autoreset=False,
                      fixed={"task": task_cfg, "seeds": [seed]}, guard=guard)
    obs, _ = env.reset()
    state, done = agent.initial_state(1), torch.zeros(1)
    log: list[dict] = []
    generator = torch.Generator().manual_seed(action_seed)
    while True:
        action, state = agent.act(torch.as_tensor(obs), state, done, greedy=greedy, generator=generator)
        step = env.run.step_index
        obs, _, term, _, _ = env.step(action.numpy())
        for hparams, returns in env.decided:
            kind, register = env.restarts[0]
            log.append({"step": step, **hparams.as_dict(), "restart": kind, "register": register,
                        "guard_returns": returns})
        if progress is not None:
            progress(env.run.step_index)
        if bool(np.all(term)):
            break
    (result,) = env.run.results()
    return PolicyRun(result, log)
