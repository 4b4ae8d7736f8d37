"""Rollout workers for meta-training: each steps one batched LHOPT env with a copy of the policy.

A worker keeps no state between calls that changes a result: `collect(weights, state)` gets
the policy weights and the worker's state (its env's random stream and task instance, its
action sampler) and returns one whole episode group and the state that follows. So the same
seed and worker count give the same rollouts whether the workers run in this process, in local
processes or as Ray actors, and a worker that dies mid-rollout is simply asked again (Ray's own
retry) with the same state. The learner (ppo.PPO) keeps the states and checkpoints them.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from lhopt_cli.support.executor import end_with_parent
from lhopt_cli.support.threads import RUN_THREADS, run_threads
from lhopt_cli.tasks.families import TaskFamily
from lhopt_cli.control.env import VecLhoptEnv
from lhopt_cli.control.policy import lhopt_agent


def initial_worker_state(seed: int, index: int, family_cfg: dict, env_kwargs: dict) -> dict:
    """Worker `index`'s state before its first episode: streams derived from (seed, index)."""
    env = VecLhoptEnv(TaskFamily(family_cfg), seed=0, autoreset=False, **env_kwargs)
    env.rng = np.random.default_rng([seed, index])
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, index, 1]).generate_state(1)[0]))
    return {"env": env.next_episode_state(), "generator": generator.get_state()}


class RolloutWorker:
    def __init__(self, family_cfg: dict, env_kwargs: dict, agent_kwargs: dict):
        self.env = VecLhoptEnv(TaskFamily(family_cfg), seed=0, autoreset=False, **env_kwargs)
        self.agent = lhopt_agent(**agent_kwargs)
        self.generator = torch.Generator()

    def collect(self, weights: dict, state: dict) -> tuple[dict, dict]:
        """One episode group with `weights` from `state`: (batch, the state after it).

        batch: obs, actions, logprobs, values, rewards, dones (and a privileged critic's inputs,
        privileged; with lr labels, lr_labels (T, envs) int64) as (T, envs, ...) tensors, the LSTM
        start state, the bootstrap (next_done, next_value), the finished episodes' returns and the
        seconds spent on reference runs (reference_s)."""
        with run_threads():  # as in a worker process or actor: the same float results anywhere
            return self._collect(weights, state)

    def _collect(self, weights: dict, state: dict) -> tuple[dict, dict]:
        self.agent.load_state_dict(weights)
        self.env.load_state_dict(state["env"])
        self.generator.set_state(state["generator"])
        n = self.env.num_envs
        cache = self.env.sweep_cache
        reference_before = cache.seconds if cache is not None else 0.0
        obs, _ = self.env.reset()
        next_obs, next_done = torch.as_tensor(obs, dtype=torch.float32), torch.ones(n)  # a fresh episode
        lstm_state = self.agent.initial_state(n)
        start_state = (lstm_state[0].clone(), lstm_state[1].clone())
        buf: dict[str, list] = {k: [] for k in ("obs", "actions", "logprobs", "rewards", "dones", "values", "privileged",
                                                "lr_labels")}
        while True:
            privileged = torch.as_tensor(self.env.privileged) if self.agent.privileged_dim else None
            buf["obs"].append(next_obs)
            if self.env.label_lr:  # the teacher's lr choice at this decision (-1: none)
                buf["lr_labels"].append(torch.as_tensor(self.env.lr_labels))
            buf["dones"].append(next_done)
            if privileged is not None:
                buf["privileged"].append(privileged)
            with torch.no_grad():
                action, logprob, _, value, lstm_state = self.agent.get_action_and_value(
                    next_obs, lstm_state, next_done, generator=self.generator, privileged=privileged)
            obs, reward, term, trunc, _ = self.env.step(action.numpy())
            buf["actions"].append(action)
            buf["logprobs"].append(logprob)
            buf["values"].append(value.flatten())
            buf["rewards"].append(torch.as_tensor(reward, dtype=torch.float32))
            next_obs = torch.as_tensor(obs, dtype=torch.float32)
            next_done = torch.as_tensor(np.logical_or(term, trunc), dtype=torch.float32)
            if bool(next_done.all()):
                break
        batch = {k: torch.stack(v) for k, v in buf.items() if v}
        batch.update(start_state=start_state, next_done=next_done, next_value=torch.zeros(n),
                     episode_returns=batch["rewards"].sum(0).tolist(),
                     reference_s=(cache.seconds if cache is not None else 0.0) - reference_before)
        return batch, {"env": self.env.next_episode_state(), "generator": self.generator.get_state()}


_PROCESS_WORKER: RolloutWorker | None = None  # one per local worker process


def _init_process(family_cfg: dict, env_kwargs: dict, agent_kwargs: dict, parent: int) -> None:
    import signal

    global _PROCESS_WORKER
    end_with_parent(parent)
    torch.set_num_threads(RUN_THREADS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle
    _PROCESS_WORKER = RolloutWorker(family_cfg, env_kwargs, agent_kwargs)


def _collect_in_process(weights: dict, state: dict) -> tuple[dict, dict]:
    return _PROCESS_WORKER.collect(weights, state)


class LocalWorkers:
    """The rollout workers in this process (processes == 1) or in a pool of local processes."""

    def __init__(self, count: int, processes: int, family_cfg: dict, env_kwargs: dict, agent_kwargs: dict):
        self.processes = max(1, min(processes, count))
        if self.processes == 1:
            self.workers = [RolloutWorker(family_cfg, env_kwargs, agent_kwargs) for _ in range(count)]
        else:
            self.pool = ProcessPoolExecutor(self.processes, mp_context=mp.get_context("spawn"),
                                            initializer=_init_process,
                                            initargs=(family_cfg, env_kwargs, agent_kwargs, os.getpid()))

    def collect(self, weights: dict, states: list[dict]) -> list[tuple[dict, dict]]:
        if self.processes == 1:
            return [worker.collect(weights, state) for worker, state in zip(self.workers, states)]
        futures = [self.pool.submit(_collect_in_process, weights, state) for state in states]
        return [future.result() for future in futures]

    def close(self) -> None:
        if self.processes > 1:
            self.pool.shutdown(cancel_futures=True)


class RayWorkers:
    """The rollout workers as Ray actors; the weights go out once per iteration (ray.put).

    address=None starts a local Ray instance (num_cpus of them); "auto" or "ray://..." joins a
    running cluster. A killed actor is restarted and its call retried by Ray itself."""

    def __init__(self, count: int, family_cfg: dict, env_kwargs: dict, agent_kwargs: dict,
                 address: str | None = None, num_cpus: int | None = None, max_restarts: int = 3):
        import ray

        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                     log_to_driver=False)
        actor = ray.remote(num_cpus=1, max_restarts=max_restarts, max_task_retries=max_restarts)(_RayWorker)
        self.actors = [actor.remote(family_cfg, env_kwargs, agent_kwargs) for _ in range(count)]

    def collect(self, weights: dict, states: list[dict]) -> list[tuple[dict, dict]]:
        shared = self.ray.put(weights)  # one copy in the object store, read by every actor
        return self.ray.get([a.collect.remote(shared, s) for a, s in zip(self.actors, states)])

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


class _RayWorker(RolloutWorker):
    def __init__(self, *args):
        torch.set_num_threads(RUN_THREADS)
        super().__init__(*args)

    def pid(self) -> int:
        import os

        return os.getpid()

    def policy_weights(self) -> dict:
        """The weights this actor last rolled out with (what the learner broadcast)."""
        return self.agent.state_dict()
