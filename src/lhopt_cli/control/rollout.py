"""Run a trained policy on one task: one episode per seed, batched, from AdamW's defaults."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..inner.loop import RunResult
from ..tasks.families import TaskFamily
from .actions import HEAD_NAMES, restart_kind
from .env import VecLhoptEnv
from .policy import RecurrentActorCritic


@dataclass
class PolicyRun:
    result: RunResult
    decisions: list[dict] = field(default_factory=list)  # step, hyperparameters, restart per decision


def run_policy(agent: RecurrentActorCritic, task_cfg: dict, seeds: list[int], decisions: int = 64,
               stats_every: int = 4, greedy: bool = False, action_seed: int = 0) -> list[PolicyRun]:
    """One-epoch runs of `task_cfg` driven by `agent`, one per seed (sampled actions are seeded)."""
    family = TaskFamily({"kinds": {task_cfg["name"]: {}}})  # unused: the episode is fixed
    env = VecLhoptEnv(family, num_envs=len(seeds), stats_every=stats_every, autoreset=False,
                      fixed={"task": task_cfg, "seeds": seeds, "decisions": decisions})
    obs, _ = env.reset()
    state, done = agent.initial_state(len(seeds)), torch.zeros(len(seeds))
    logs: list[list[dict]] = [[] for _ in seeds]
    restart_head = HEAD_NAMES.index("restart")
    generator = torch.Generator().manual_seed(action_seed)
    while True:
        action, state = agent.act(torch.as_tensor(obs), state, done, greedy=greedy, generator=generator)
        step = env.run.step_index
        obs, _, term, _, _ = env.step(action.numpy())
        for i, ctx in enumerate(env.run.ctx):
            kind, register = restart_kind(int(action[i, restart_head]))
            logs[i].append({"step": step, **ctx.hparams.as_dict(), "restart": kind, "register": register})
        if bool(np.all(term)):
            break
    return [PolicyRun(result, log) for result, log in zip(env.run.results(), logs)]
