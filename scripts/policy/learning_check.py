"""Does meta-training learn? On a family where the right move is known, compare the policy
before and after a few minutes of PPO.

    python scripts/policy/learning_check.py [--iterations 60] [--envs 16] [--run-dir outputs/learning_check]

The family `nqm_low_lr` starts every run at a learning rate 100x too small, so raising it is
the good behaviour. Prints the reward curve (mean episode reward per 10 iterations), then the
untrained and trained policies' mean reward and final learning rate on the same 4 held-out
episode groups (sampled actions, fixed seeds).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from lhopt_cli.commands import train_policy
from lhopt_cli.config.compose import compose, make_run_dir
from lhopt_cli.control.checkpoint import load_policy
from lhopt_cli.control.env import VecLhoptEnv
from lhopt_cli.tasks.families import TaskFamily


def evaluate(agent, plan, groups: int = 4, seed: int = 12345) -> tuple[float, float]:
    """Mean reward and mean final lr over `groups` episode groups with fixed seeds (`plan`: the
    train-policy plan whose family and episodes are played)."""
    env = VecLhoptEnv(TaskFamily(plan.family), **plan.env_kwargs)
    rewards, lrs = [], []
    generator = torch.Generator().manual_seed(seed)
    for g in range(groups):
        obs, _ = env.reset(seed=seed + g)
        state, done = agent.initial_state(env.num_envs), torch.zeros(env.num_envs)
        while True:
            action, state = agent.act(torch.as_tensor(obs), state, done, generator=generator)
            obs, reward, term, _, info = env.step(action.numpy())
            if term.all():
                rewards += list(reward)
                lrs += list(info["final_lr"])
                break
    return float(np.mean(rewards)), float(np.exp(np.mean(np.log(lrs))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--groups", type=int, default=4, help="held-out episode groups for the before/after check")
    parser.add_argument("--run-dir", default="outputs/learning_check")
    parser.add_argument("overrides", nargs="*", help="extra train-policy overrides (e.g. debug=smoke)")
    args = parser.parse_args()
    cfg = compose("train_policy", ["task_family=nqm_low_lr", f"ppo.iterations={args.iterations}",
                                   f"envs={args.envs}", f"run_dir={args.run_dir}", "resume=true", *args.overrides])
    run_dir = make_run_dir(cfg)
    plan = train_policy.plan(cfg, Path(run_dir))
    untrained = train_policy.build(plan)
    untrained.workers.close()
    before = evaluate(untrained.agent, plan, args.groups)
    policy_path = train_policy.run(plan, Console())
    log = pd.read_csv(Path(run_dir) / "meta_train.csv")
    print("reward curve (mean episode reward per block of 10 iterations):")
    for start in range(0, len(log), 10):
        block = log.iloc[start : start + 10]
        print(f"  iterations {start + 1:4d}-{start + len(block):4d}: {block.mean_episode_reward.mean():+.3f}")
    agent, _ = load_policy(policy_path)
    after = evaluate(agent, plan, args.groups)
    print(f"untrained policy: mean reward {before[0]:+.3f}, final lr (geometric mean) {before[1]:.2e}")
    print(f"trained policy:   mean reward {after[0]:+.3f}, final lr (geometric mean) {after[1]:.2e}")
    print("start lr of every run: 1.00e-05 (AdamW default 1e-3 x 0.01)")


if __name__ == "__main__":
    main()
