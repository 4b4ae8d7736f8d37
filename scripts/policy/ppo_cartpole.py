"""The independent check of lhopt's PPO: the same code, unchanged, solves CartPole-v1.

    python scripts/policy/ppo_cartpole.py [--iterations 150] [--seed 1]

Prints the mean return of the last 20 finished episodes every 10 iterations, then a final
greedy evaluation over 20 episodes; exits 0 when that mean is at least 475.
"""
from __future__ import annotations

import argparse
import sys

import gymnasium as gym
import numpy as np
import torch

from lhopt_cli.control.policy import RecurrentActorCritic
from lhopt_cli.control.ppo import PPO, PPOConfig


def make_envs(count: int):
    return gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(count)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def greedy_return(agent: RecurrentActorCritic, episodes: int = 20, seed: int = 1000) -> float:
    env = gym.make("CartPole-v1")
    totals = []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        state, done, total = agent.initial_state(1), torch.zeros(1), 0.0
        while True:
            with torch.no_grad():
                action, _, _, _, state = agent.get_action_and_value(
                    torch.as_tensor(obs, dtype=torch.float32)[None], state, done, greedy=True)
            obs, reward, term, trunc, _ = env.step(int(action[0, 0]))
            total += reward
            if term or trunc:
                break
        totals.append(total)
    return float(np.mean(totals))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    envs = make_envs(8)
    agent = RecurrentActorCritic(4, [2], hidden=64, obs_clip=5.0)
    cfg = PPOConfig(learning_rate=2.5e-3, num_steps=128, gamma=0.99, gae_lambda=0.95, minibatch_size=256,
                    minibatch_episodes=4, update_epochs=4, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5,
                    iterations=args.iterations)
    ppo = PPO(envs, agent, cfg, seed=args.seed)
    recent: list[float] = []

    def report(stats: dict) -> None:
        if stats["mean_episode_reward"] == stats["mean_episode_reward"]:
            recent.append(stats["mean_episode_reward"])
        if stats["iteration"] % 10 == 0:
            print(f"iteration {stats['iteration']:4d}  steps {stats['global_step']:7d}  "
                  f"mean return (last iterations) {np.mean(recent[-5:]):6.1f}  approx_kl {stats['approx_kl']:.4f}",
                  flush=True)

    ppo.train(report)
    score = greedy_return(agent)
    print(f"greedy evaluation over 20 episodes: mean return {score:.1f} (solved at >= 475)")
    return 0 if score >= 475 else 1


if __name__ == "__main__":
    sys.exit(main())
