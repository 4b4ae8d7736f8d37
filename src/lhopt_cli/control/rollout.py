"""Run a trained policy on one task: one episode per seed, batched, from AdamW's defaults,
observed by the policy's observation protocol."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..inner.loop import RunResult
from ..tasks.families import TaskFamily
from .env import VecLhoptEnv
from .policy import RecurrentActorCritic
from .protocol import ObservationProtocol


@dataclass
class PolicyRun:
    result: RunResult
    decisions: list[dict] = field(default_factory=list)  # step, hyperparameters, restart per decision


def run_policy(agent: RecurrentActorCritic, task_cfg: dict, seeds: list[int], protocol: ObservationProtocol,
               greedy: bool = False, action_seed: int = 0, guard: bool = True) -> list[PolicyRun]:
    """One-epoch runs of `task_cfg` driven by `agent`, one per seed (sampled actions are seeded).

    Raises ProtocolError if the task's validation points contradict `protocol`. The decision log
    records the restarts that happened (a save, or a load of a filled register) and how often the
    divergence guard (`guard`, inner/guard.py) has sent the run back so far (`guard_returns`)."""
    protocol.check(f"task {task_cfg['name']}", eval_points=task_cfg.get("eval_points"))
    family = TaskFamily({"kinds": {task_cfg["name"]: {}}})  # unused: the episode is fixed
    env = VecLhoptEnv(family, num_envs=len(seeds), protocol=protocol.as_dict(), autoreset=False,
                      fixed={"task": task_cfg, "seeds": seeds}, guard=guard)
    obs, _ = env.reset()
    state, done = agent.initial_state(len(seeds)), torch.zeros(len(seeds))
    logs: list[list[dict]] = [[] for _ in seeds]
    generator = torch.Generator().manual_seed(action_seed)
    while True:
        action, state = agent.act(torch.as_tensor(obs), state, done, greedy=greedy, generator=generator)
        step = env.run.step_index
        obs, _, term, _, _ = env.step(action.numpy())
        for i, (hparams, returns) in enumerate(env.decided):
            kind, register = env.restarts[i]
            logs[i].append({"step": step, **hparams.as_dict(), "restart": kind, "register": register,
                            "guard_returns": returns})
        if bool(np.all(term)):
            break
    return [PolicyRun(result, log) for result, log in zip(env.run.results(), logs)]
