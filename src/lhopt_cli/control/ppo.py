"""PPO in the CleanRL manner (recurrent policy), for any gymnasium-style vector env.

With `envs`, an iteration collects `num_steps` transitions per env (any env, e.g. CartPole).
With `workers` (control/workers.py: in-process, local processes or Ray actors; meta-training)
the learner sends the weights and each worker's state, and updates on the whole episode groups
they return, so every iteration ends on an episode boundary (what makes resume exact).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from .policy import RecurrentActorCritic


@dataclass
class PPOConfig:
    learning_rate: float = 2e-4
    num_steps: int = 128  # per env per iteration (rollouts from envs)
    gamma: float = 1.0
    gae_lambda: float = 0.95
    minibatch_size: int = 128
    update_epochs: int = 4  # sample reuse
    clip_coef: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 5.0
    target_kl: float | None = None
    norm_adv: bool = True
    clip_vloss: bool = True
    iterations: int = 100


class PPO:
    """The rollout / GAE / update loop; `state_dict` holds everything a resume needs."""

    def __init__(self, envs, agent: RecurrentActorCritic, cfg: PPOConfig, seed: int = 0,
                 workers=None, worker_states: list[dict] | None = None):
        """Rollouts from `envs` in this process, or from `workers` (then envs=None) starting at
        `worker_states`, one per worker."""
        self.envs, self.agent, self.cfg = envs, agent, cfg
        self.workers, self.worker_states = workers, worker_states
        self.optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.learning_rate, eps=1e-5)
        self.iteration, self.global_step, self.episodes = 0, 0, 0
        torch.manual_seed(seed)
        self.next_obs = None
        if envs is not None:
            self.next_done = torch.zeros(envs.num_envs)
            self.lstm_state = agent.initial_state(envs.num_envs)
            self.returns = np.zeros(envs.num_envs)
        self.seed = seed
        self.np_rng = np.random.default_rng(seed)  # minibatch order
        self.resumed = False

    def state_dict(self) -> dict:
        return {"agent": self.agent.state_dict(), "optimizer": self.optimizer.state_dict(),
                "iteration": self.iteration, "global_step": self.global_step, "episodes": self.episodes,
                "torch_rng": torch.get_rng_state(), "np_rng": json.dumps(self.np_rng.bit_generator.state),
                "worker_states": self.worker_states}

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_state_dict(state["agent"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration, self.global_step = int(state["iteration"]), int(state["global_step"])
        self.episodes = int(state["episodes"])
        torch.set_rng_state(state["torch_rng"])
        self.np_rng.bit_generator.state = json.loads(state["np_rng"])
        if state.get("worker_states") is not None:
            self.worker_states = state["worker_states"]
        self.resumed = True  # the env was restored to the start of an episode: reset without a seed

    # --- rollout ---------------------------------------------------------------------------
    def _env_action(self, action: torch.Tensor) -> np.ndarray:
        """(n, heads) choices, as a Discrete space takes them (one head) or MultiDiscrete."""
        discrete = isinstance(self.envs.single_action_space, gym.spaces.Discrete)
        return action[:, 0].numpy() if discrete else action.numpy()

    def _rollout(self) -> tuple[dict, list[float]]:
        envs, agent, n = self.envs, self.agent, self.envs.num_envs
        if self.next_obs is None:  # first iteration, or the first after a resume
            obs, _ = envs.reset(seed=None if self.resumed else self.seed)
            self.next_obs = torch.as_tensor(obs, dtype=torch.float32)
            self.next_done = torch.zeros(n)
            self.lstm_state = agent.initial_state(n)
        start_state = (self.lstm_state[0].clone(), self.lstm_state[1].clone())
        keys = ("obs", "actions", "logprobs", "rewards", "dones", "values")
        buf: dict[str, list] = {k: [] for k in keys}
        finished: list[float] = []
        for _ in range(self.cfg.num_steps):
            buf["obs"].append(self.next_obs)
            buf["dones"].append(self.next_done)
            with torch.no_grad():
                action, logprob, _, value, self.lstm_state = agent.get_action_and_value(
                    self.next_obs, self.lstm_state, self.next_done)
            obs, reward, term, trunc, _ = self.envs.step(self._env_action(action))
            done = np.logical_or(term, trunc)
            self.returns += reward
            for i in np.flatnonzero(done):
                finished.append(float(self.returns[i]))
                self.returns[i] = 0.0
            buf["actions"].append(action)
            buf["logprobs"].append(logprob)
            buf["values"].append(value.flatten())
            buf["rewards"].append(torch.as_tensor(reward, dtype=torch.float32))
            self.next_obs = torch.as_tensor(obs, dtype=torch.float32)
            self.next_done = torch.as_tensor(done, dtype=torch.float32)
            self.global_step += n
        batch = {k: torch.stack(v) for k, v in buf.items()}  # each (T, n, ...)
        with torch.no_grad():  # bootstraps the value after the last step (masked where it ended)
            batch["next_value"] = self.agent.get_value(self.next_obs, self.lstm_state, self.next_done).reshape(-1)
        batch.update(start_state=start_state, next_done=self.next_done.clone())
        return batch, finished

    def _advantages(self, b: dict) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, steps = self.cfg, b["rewards"].shape[0]
        advantages = torch.zeros_like(b["rewards"])
        last = torch.zeros_like(b["rewards"][0])
        for t in reversed(range(steps)):
            if t == steps - 1:
                nonterminal, next_values = 1.0 - b["next_done"], b["next_value"]
            else:
                nonterminal, next_values = 1.0 - b["dones"][t + 1], b["values"][t + 1]
            delta = b["rewards"][t] + cfg.gamma * next_values * nonterminal - b["values"][t]
            last = delta + cfg.gamma * cfg.gae_lambda * nonterminal * last
            advantages[t] = last
        return advantages, advantages + b["values"]

    # --- update ----------------------------------------------------------------------------
    def _update(self, batches: list[dict], targets: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """Minibatches of whole env sequences, each from one batch (one worker's episode group)."""
        cfg, agent = self.cfg, self.agent
        flats = []
        for b, (advantages, returns) in zip(batches, targets):
            steps, n = b["rewards"].shape
            flat = {k: v.reshape(-1) for k, v in (("logprobs", b["logprobs"]), ("dones", b["dones"]),
                                                   ("advantages", advantages), ("returns", returns), ("values", b["values"]))}
            flat.update(obs=b["obs"].reshape(steps * n, -1), actions=b["actions"].reshape(steps * n, -1),
                        index=np.arange(steps * n).reshape(steps, n), start_state=b["start_state"])
            flats.append(flat)
        clipfracs, stats = [], {}
        for _ in range(cfg.update_epochs):
            minibatches = []
            for k, flat in enumerate(flats):
                steps, n = flat["index"].shape
                env_ids = np.arange(n)
                self.np_rng.shuffle(env_ids)
                per_batch = max(1, min(n, cfg.minibatch_size // steps))
                minibatches += [(k, env_ids[start : start + per_batch]) for start in range(0, n, per_batch)]
            if len(flats) > 1:
                minibatches = [minibatches[i] for i in self.np_rng.permutation(len(minibatches))]
            for k, mb_envs in minibatches:
                flat = flats[k]
                mb = flat["index"][:, mb_envs].ravel()  # whole sequences of these envs, time-major
                start_state = flat["start_state"]
                _, newlogprob, entropy, newvalue, _ = agent.get_action_and_value(
                    flat["obs"][mb], (start_state[0][:, mb_envs], start_state[1][:, mb_envs]),
                    flat["dones"][mb], flat["actions"][mb])
                logratio = newlogprob - flat["logprobs"][mb]
                ratio = logratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs.append(((ratio - 1.0).abs() > cfg.clip_coef).float().mean().item())
                mb_adv = flat["advantages"][mb]
                if cfg.norm_adv and len(mb) > 1:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                newvalue = newvalue.view(-1)
                if cfg.clip_vloss:
                    v_unclipped = (newvalue - flat["returns"][mb]) ** 2
                    v_clipped = flat["values"][mb] + (newvalue - flat["values"][mb]).clamp(-cfg.clip_coef, cfg.clip_coef)
                    v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - flat["returns"][mb]) ** 2).mean()
                else:
                    v_loss = 0.5 * ((newvalue - flat["returns"][mb]) ** 2).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - cfg.ent_coef * entropy_loss + v_loss * cfg.vf_coef
                self.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
            if cfg.target_kl is not None and approx_kl > cfg.target_kl:
                break
        y_pred = torch.cat([f["values"] for f in flats]).numpy()
        y_true = torch.cat([f["returns"] for f in flats]).numpy()
        var_y = np.var(y_true)
        stats.update(pg_loss=pg_loss.item(), v_loss=v_loss.item(), entropy=entropy_loss.item(),
                     approx_kl=approx_kl.item(), clipfrac=float(np.mean(clipfracs)),
                     explained_variance=float("nan") if var_y == 0 else float(1 - np.var(y_true - y_pred) / var_y))
        return stats

    def iterate(self) -> dict[str, float]:
        """One iteration: rollout, GAE, update; returns the logged metrics."""
        start = time.perf_counter()
        if self.workers is not None:
            results = self.workers.collect(self.agent.state_dict(), self.worker_states)
            batches, self.worker_states = [b for b, _ in results], [state for _, state in results]
            finished = [r for b in batches for r in b["episode_returns"]]
            self.global_step += sum(b["rewards"].numel() for b in batches)
        else:
            batch, finished = self._rollout()
            batches = [batch]
        rollout_s = time.perf_counter() - start
        stats = self._update(batches, [self._advantages(b) for b in batches])
        obs = torch.cat([b["obs"].reshape(-1, b["obs"].shape[-1]) for b in batches])
        self.agent.obs_rms.update(obs)  # after the update: the rollout's logprobs stay valid
        self.iteration += 1
        self.episodes += len(finished)
        wall = time.perf_counter() - start
        stats.update(iteration=self.iteration, global_step=self.global_step, episodes=self.episodes,
                     mean_episode_reward=float(np.mean(finished)) if finished else float("nan"),
                     episodes_per_s=len(finished) / wall, rollout_s=rollout_s, update_s=wall - rollout_s)
        return stats

    def train(self, on_iteration: Callable[[dict], None] | None = None) -> None:
        while self.iteration < self.cfg.iterations:
            stats = self.iterate()
            if on_iteration:
                on_iteration(stats)
