"""PPO in the CleanRL manner (recurrent policy), for any gymnasium-style vector env.

With `envs`, an iteration collects `num_steps` transitions per env (any env, e.g. CartPole).
With `workers` (control/workers.py: in-process, local processes or Ray actors; meta-training)
the learner sends the weights and each worker's state, and updates on the whole episode groups
they return, so every iteration ends on an episode boundary (what makes resume exact).

Advantages are normalised over the whole iteration's batch, each episode weighing the same,
before it is cut into minibatches of whole sequences drawn across all episode groups: with a
sparse final reward, normalising inside one episode would keep only the sign of its outcome
and turn its early steps against it (docs/method.md section 6). With `advantage="loo"` the critic is not
used for advantages: each episode's return is compared with the mean return of the other
episodes of its group (one task instance and seed), and every decision of the episode gets that
difference. An optional Polyak average of the weights is kept beside them (`polyak`).
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import kl_divergence

from lhopt_cli.control.policy import RecurrentActorCritic


@dataclass
class PPOConfig:
    learning_rate: float = 2e-4
    num_steps: int = 128  # per env per iteration (rollouts from envs)
    gamma: float = 1.0
    gae_lambda: float = 0.95
    minibatch_size: int = 128  # transitions per minibatch, about (whole sequences are kept)
    minibatch_episodes: int = 2  # at least this many sequences per minibatch
    update_epochs: int = 4  # sample reuse
    clip_coef: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 5.0
    target_kl: float | None = None
    norm_adv: bool = True
    center_returns: bool = False  # subtract the batch's mean episode return (whole-episode columns only)
    clip_vloss: bool = True
    iterations: int = 100
    # "gae": advantages from the critic (GAE); "loo": leave-one-out group baseline, for batches
    # whose columns are whole episodes of one task instance (workers): A_i = R_i - mean_{j!=i} R_j
    advantage: str = "gae"
    entropy_reduction: str = "sum"  # the entropy bonus over the action heads: "sum" or "mean"
    polyak: float | None = None  # decay of a Polyak (exponential) average of the weights; None: none
    # weight of a penalty KL(policy || the policy the run started from), per decision summed over the
    # heads: a continuation of a policy that transfers may then improve on its family without
    # drifting from what transferred (0: no penalty)
    anchor_coef: float = 0.0
    # weight of a supervised loss on the lr head beside PPO's: the cross-entropy of the policy's lr
    # choice against the teacher's label at every decision the current policy visits (batches with
    # lr_labels; DAgger's labels on the learner's own states, Ross et al. 2011); 0: none
    imitation_coef: float = 0.0

    def __post_init__(self):
        if self.advantage not in ("gae", "loo"):
            raise ValueError(f"ppo.advantage must be gae or loo (got {self.advantage!r})")
        if self.entropy_reduction not in ("sum", "mean"):
            raise ValueError(f"ppo.entropy_reduction must be sum or mean (got {self.entropy_reduction!r})")
        if self.polyak is not None and not 0.0 <= self.polyak < 1.0:
            raise ValueError(f"ppo.polyak must be in [0, 1) or null (got {self.polyak})")
        if self.target_kl is not None and not self.target_kl > 0:
            raise ValueError(f"ppo.target_kl must be > 0 or null (got {self.target_kl})")
        for name in ("learning_rate", "clip_coef", "max_grad_norm"):  # the comparisons also refuse nan
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"ppo.{name} must be a finite number > 0 (got {getattr(self, name)})")
        for name in ("ent_coef", "vf_coef", "anchor_coef", "imitation_coef"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"ppo.{name} must be a finite number >= 0 (got {getattr(self, name)})")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"ppo.{name} must be in [0, 1] (got {getattr(self, name)})")
        for name in ("num_steps", "minibatch_size", "minibatch_episodes", "update_epochs", "iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ppo.{name} must be >= 1 (got {getattr(self, name)})")


def leave_one_out(batch: dict) -> torch.Tensor:
    """(T, n) advantages of a batch whose n columns are whole episodes of one task instance:
    every step of episode i gets R_i - mean_{j != i} R_j (R: the episode's return), the
    group-relative baseline of RLOO (Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline
    for free"). Raises ValueError for fewer than 2 episodes or a column that is not one episode."""
    rewards, dones = batch["rewards"], batch["dones"]
    steps, n = rewards.shape
    if n < 2:
        raise ValueError("ppo.advantage=loo needs at least 2 episodes per group (envs >= 2)")
    if bool(dones[1:].any()) or not bool(batch["next_done"].all()):
        raise ValueError("ppo.advantage=loo needs whole episodes per column (rollout workers)")
    returns = rewards.sum(0)
    baseline = (returns.sum() - returns) / (n - 1)
    return (returns - baseline).expand(steps, n).clone()


def episode_weights(dones: torch.Tensor) -> torch.Tensor:
    """(T, n) weights 1 / (length of the episode a step belongs to): an episode starts where
    `dones` is 1 (or at the top of a column), so every episode, long or short, weighs 1."""
    steps, n = dones.shape
    starts = dones.clone()
    starts[0] = 1.0
    episode = torch.cumsum(starts, 0).long() + torch.arange(n) * (steps + 1)  # ids unique per column
    flat = episode.reshape(-1)
    counts = torch.bincount(flat)
    return (1.0 / counts[flat].float()).reshape(steps, n)


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
        self.polyak_state = self._copy_state() if cfg.polyak is not None else None
        # the weights the run started from, kept in every checkpoint: the anchor, whenever one is asked for
        self.initial_weights = self._copy_state()
        self.anchor = self._frozen_copy(self.initial_weights) if cfg.anchor_coef > 0 else None

    def _frozen_copy(self, state: dict[str, torch.Tensor]) -> RecurrentActorCritic:
        anchor = copy.deepcopy(self.agent)
        anchor.load_state_dict(state)
        anchor.requires_grad_(False)
        return anchor

    def _copy_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.agent.state_dict().items()}

    def _update_polyak(self) -> None:
        """Weights: decay x average + (1 - decay) x current; buffers (input statistics) copied."""
        decay = self.cfg.polyak
        parameters = {name for name, _ in self.agent.named_parameters()}
        for name, value in self.agent.state_dict().items():
            if name in parameters:
                self.polyak_state[name].mul_(decay).add_(value.detach(), alpha=1.0 - decay)
            else:
                self.polyak_state[name].copy_(value)

    def polyak_agent(self) -> RecurrentActorCritic | None:
        """A copy of the agent holding the Polyak-averaged weights (None without `polyak`)."""
        if self.polyak_state is None:
            return None
        agent = copy.deepcopy(self.agent)
        agent.load_state_dict(self.polyak_state)
        return agent

    def state_dict(self) -> dict:
        return {"agent": self.agent.state_dict(), "optimizer": self.optimizer.state_dict(),
                "iteration": self.iteration, "global_step": self.global_step, "episodes": self.episodes,
                "torch_rng": torch.get_rng_state(), "np_rng": json.dumps(self.np_rng.bit_generator.state),
                "worker_states": self.worker_states, "polyak": self.polyak_state,
                "initial_weights": self.initial_weights}

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_state_dict(state["agent"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration, self.global_step = int(state["iteration"]), int(state["global_step"])
        self.episodes = int(state["episodes"])
        torch.set_rng_state(state["torch_rng"])
        self.np_rng.bit_generator.state = json.loads(state["np_rng"])
        if state.get("worker_states") is not None:
            self.worker_states = state["worker_states"]
        if self.polyak_state is not None:  # a checkpoint without an average starts it from its weights
            self.polyak_state = state.get("polyak") or self._copy_state()
        # a checkpoint from before they were kept: its anchor, else the weights resumed stand in for them
        self.initial_weights = state.get("initial_weights") or state.get("anchor") or self._copy_state()
        if self.anchor is not None:
            self.anchor.load_state_dict(self.initial_weights)
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

    def advantages(self, batches: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per batch (T, n): advantages normalised over all batches together (each episode, a
        run of steps between `dones`, weighs the same), and the critic's return targets.

        With `center_returns` (batches whose columns are whole episodes, as workers return them)
        the batch's mean episode return is subtracted from every episode's final reward first, and
        the advantages are only scaled: every step of an episode then carries the sign of its
        outcome against the batch, whatever the critic knows yet and however long the episode."""
        if self.cfg.center_returns:
            mean_return = float(torch.cat([b["rewards"].sum(0) for b in batches]).mean())
            batches = [{**b, "rewards": torch.cat([b["rewards"][:-1], b["rewards"][-1:] - mean_return])}
                       for b in batches]
        targets = [self._advantages(b) for b in batches]
        if self.cfg.advantage == "loo":
            targets = [(leave_one_out(b), returns) for b, (_, returns) in zip(batches, targets)]
        if not self.cfg.norm_adv:
            return targets
        weights = [episode_weights(b["dones"]) for b in batches]
        total = sum(float(w.sum()) for w in weights)
        mean = 0.0 if self.cfg.center_returns else sum(float((w * a).sum()) for w, (a, _) in zip(weights, targets)) / total
        var = sum(float((w * (a - mean) ** 2).sum()) for w, (a, _) in zip(weights, targets)) / total
        return [((a - mean) / (var**0.5 + 1e-8), returns) for a, returns in targets]

    def minibatches(self, batches: list[dict]) -> list[list[tuple[int, np.ndarray]]]:
        """One epoch's minibatches: each a list of (batch index, env columns), whole sequences
        drawn at random across all batches, at least `minibatch_episodes` of them where there are."""
        columns = [(k, j) for k, b in enumerate(batches) for j in range(b["rewards"].shape[1])]
        steps = sum(b["rewards"].numel() for b in batches)
        count = max(1, min(len(columns) // max(1, self.cfg.minibatch_episodes),
                           round(steps / max(1, self.cfg.minibatch_size))))
        order = self.np_rng.permutation(len(columns))
        plan = []
        for part in np.array_split(order, count):
            picked = sorted(columns[i] for i in part)
            plan.append([(k, np.array([j for kk, j in picked if kk == k])) for k in sorted({k for k, _ in picked})])
        return plan

    # --- update ----------------------------------------------------------------------------
    def _update(self, batches: list[dict], targets: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """Minibatches of whole env sequences drawn across all batches (episode groups)."""
        cfg, agent = self.cfg, self.agent
        flats = []
        for b, (advantages, returns) in zip(batches, targets):
            steps, n = b["rewards"].shape
            flat = {k: v.reshape(-1) for k, v in (("logprobs", b["logprobs"]), ("dones", b["dones"]),
                                                   ("advantages", advantages), ("returns", returns), ("values", b["values"]))}
            flat["lr_labels"] = b["lr_labels"].reshape(-1) if "lr_labels" in b else None
            flat.update(obs=b["obs"].reshape(steps * n, -1), actions=b["actions"].reshape(steps * n, -1),
                        index=np.arange(steps * n).reshape(steps, n), start_state=b["start_state"],
                        privileged=b["privileged"].reshape(steps * n, -1) if "privileged" in b else None)
            flats.append(flat)
        clipfracs, stats, epochs, imitation_stats = [], {}, 0, []
        for _ in range(cfg.update_epochs):
            epochs += 1
            for minibatch in self.minibatches(batches):
                parts = {k: [] for k in ("newlogprob", "entropy", "newvalue", "logprobs", "advantages", "returns", "values",
                                         "anchor_kl", "imitation", "agreement")}
                for k, mb_envs in minibatch:
                    flat = flats[k]
                    mb = flat["index"][:, mb_envs].ravel()  # whole sequences of these envs, time-major
                    start_state = flat["start_state"]
                    privileged = flat["privileged"][mb] if flat["privileged"] is not None else None
                    state = (start_state[0][:, mb_envs], start_state[1][:, mb_envs])
                    _, newlogprob, entropy, newvalue, _, dists = agent.get_action_and_value(
                        flat["obs"][mb], state, flat["dones"][mb], flat["actions"][mb], privileged=privileged,
                        with_distributions=True)
                    if self.anchor is not None:  # its LSTM from the same start (zeros for worker episodes)
                        with torch.no_grad():
                            hidden, _ = self.anchor.get_states(flat["obs"][mb], state, flat["dones"][mb])
                            anchored = self.anchor.distributions(hidden, flat["obs"][mb])
                        parts["anchor_kl"].append(torch.stack([kl_divergence(d, a) for d, a in zip(dists, anchored)],
                                                              -1).sum(-1))
                    if flat["lr_labels"] is not None and cfg.imitation_coef > 0:
                        labels = flat["lr_labels"][mb]
                        labelled = labels >= 0
                        lr_head = dists[0]  # HEADS' first head is the lr's
                        parts["imitation"].append(-lr_head.log_prob(labels.clamp(min=0))[labelled])
                        parts["agreement"].append((lr_head.probs.argmax(-1) == labels)[labelled].float())
                    for name, value in (("newlogprob", newlogprob), ("entropy", entropy), ("newvalue", newvalue.view(-1))):
                        parts[name].append(value)
                    for name in ("logprobs", "advantages", "returns", "values"):
                        parts[name].append(flat[name][mb])
                mb_ = {name: torch.cat(values) for name, values in parts.items() if values}
                logratio = mb_["newlogprob"] - mb_["logprobs"]
                ratio = logratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs.append(((ratio - 1.0).abs() > cfg.clip_coef).float().mean().item())
                mb_adv = mb_["advantages"]  # normalised over the whole batch already
                pg_loss = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                newvalue, returns, values = mb_["newvalue"], mb_["returns"], mb_["values"]
                if cfg.clip_vloss:
                    v_unclipped = (newvalue - returns) ** 2
                    v_clipped = values + (newvalue - values).clamp(-cfg.clip_coef, cfg.clip_coef)
                    v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - returns) ** 2).mean()
                else:
                    v_loss = 0.5 * ((newvalue - returns) ** 2).mean()
                entropy_loss = mb_["entropy"].mean()  # summed over heads (logged so)
                bonus = entropy_loss / len(agent.nvec) if cfg.entropy_reduction == "mean" else entropy_loss
                loss = pg_loss - cfg.ent_coef * bonus + v_loss * cfg.vf_coef
                if self.anchor is not None:
                    anchor_kl = mb_["anchor_kl"].mean()
                    loss = loss + cfg.anchor_coef * anchor_kl
                if "imitation" in mb_ and mb_["imitation"].numel():
                    imitation = mb_["imitation"].mean()
                    loss = loss + cfg.imitation_coef * imitation
                    imitation_stats.append((imitation.item(), mb_["agreement"].mean().item()))
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
                     approx_kl=approx_kl.item(), clipfrac=float(np.mean(clipfracs)), update_epochs=epochs,
                     explained_variance=float("nan") if var_y == 0 else float(1 - np.var(y_true - y_pred) / var_y),
                     anchor_kl=anchor_kl.item() if self.anchor is not None else float("nan"),
                     # over every minibatch of the update: how far the lr head is from the teacher
                     imitation_loss=float(np.mean([i for i, _ in imitation_stats])) if imitation_stats else float("nan"),
                     label_agreement=float(np.mean([a for _, a in imitation_stats])) if imitation_stats else float("nan"))
        return stats

    def iterate(self) -> dict[str, float]:
        """One iteration: rollout, GAE, update; returns the logged metrics."""
        start = time.perf_counter()
        if self.workers is not None:
            results = self.workers.collect(self.agent.state_dict(), self.worker_states)
            batches, self.worker_states = [b for b, _ in results], [state for _, state in results]
            finished = [r for b in batches for r in b["episode_returns"]]
            reference_s = sum(float(b.get("reference_s", 0.0)) for b in batches)
            self.global_step += sum(b["rewards"].numel() for b in batches)
        else:
            batch, finished = self._rollout()
            batches, reference_s = [batch], 0.0
        rollout_s = time.perf_counter() - start
        stats = self._update(batches, self.advantages(batches))
        obs = torch.cat([b["obs"].reshape(-1, b["obs"].shape[-1]) for b in batches])
        self.agent.obs_rms.update(obs)  # after the update: the rollout's logprobs stay valid
        if self.agent.privileged_dim and all("privileged" in b for b in batches):
            self.agent.privileged_rms.update(torch.cat([b["privileged"].reshape(-1, self.agent.privileged_dim)
                                                        for b in batches]))
        if self.polyak_state is not None:  # after the input statistics, which it copies
            self._update_polyak()
        self.iteration += 1
        self.episodes += len(finished)
        wall = time.perf_counter() - start
        stats.update(iteration=self.iteration, global_step=self.global_step, episodes=self.episodes,
                     mean_episode_reward=float(np.mean(finished)) if finished else float("nan"),
                     episodes_per_s=len(finished) / wall, rollout_s=rollout_s, update_s=wall - rollout_s,
                     reference_s=reference_s)
        return stats

    def train(self, on_iteration: Callable[[dict], None] | None = None) -> None:
        while self.iteration < self.cfg.iterations:
            stats = self.iterate()
            if on_iteration:
                on_iteration(stats)
