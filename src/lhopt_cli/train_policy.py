"""The train-policy job: PPO meta-training of the controller over a task family.

Writes <run_dir>/meta_train.csv (one row per PPO iteration), <run_dir>/checkpoint.pt (every
`checkpoint_every` iterations, atomically) and <run_dir>/policy.pt at the end. `resume=true`
continues from checkpoint.pt; iterations end on episode boundaries, so a resumed run takes
the same path as an uninterrupted one with the same seed.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from .config import ConfigError
from .control.actions import NVEC, prior_logits
from .control.checkpoint import atomic_save, save_policy
from .control.env import VecLhoptEnv
from .control.features import FEATURE_NAMES
from .control.policy import RecurrentActorCritic
from .control.ppo import PPO, PPOConfig
from .progress import progress_bar
from .tasks.families import FamilyError, TaskFamily

LOG_COLUMNS = ["iteration", "global_step", "episodes", "mean_episode_reward", "episodes_per_s", "approx_kl",
               "clipfrac", "entropy", "explained_variance", "pg_loss", "v_loss", "rollout_s", "update_s"]


def build(cfg: DictConfig) -> tuple[VecLhoptEnv, PPO]:
    family_cfg = OmegaConf.to_container(cfg.task_family, resolve=True)
    try:
        family = TaskFamily(family_cfg)
    except FamilyError as err:
        raise ConfigError(str(err)) from None
    c = cfg.controller
    env = VecLhoptEnv(family, int(cfg.envs), int(cfg.seed), (int(c.decisions[0]), int(c.decisions[1])),
                      int(c.stats_every), int(family_cfg.get("reuse", 2)),
                      randomize_start="start_lr_scale" not in family_cfg,
                      start_lr_scale=float(family_cfg.get("start_lr_scale", 1.0)))
    torch.manual_seed(int(cfg.seed))
    agent = RecurrentActorCritic(len(FEATURE_NAMES), list(NVEC), int(c.hidden), float(c.obs_clip),
                                 prior_logits(float(c.noop_logit), float(c.restart_none_logit)))
    ppo_cfg = PPOConfig(**{**OmegaConf.to_container(cfg.ppo, resolve=True), "rollout": "episodes"})
    return env, PPO(env, agent, ppo_cfg, seed=int(cfg.seed))


def _log_rows(path: Path, keep_through: int) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as handle:
        return [row for row in csv.DictReader(handle) if int(row["iteration"]) <= keep_through]


def run(cfg: DictConfig, run_dir: Path, console: Console | None = None) -> Path:
    console = console or Console(soft_wrap=True)
    env, ppo = build(cfg)
    checkpoint = run_dir / "checkpoint.pt"
    log_path = run_dir / "meta_train.csv"
    if cfg.resume and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        ppo.load_state_dict(state["ppo"])
        env.load_state_dict(state["env"])
        console.print(f"Resuming from iteration {ppo.iteration} of {ppo.cfg.iterations} ({checkpoint})")
    elif log_path.exists() or checkpoint.exists():
        raise ConfigError(f"{run_dir} already holds a meta-training run: pass resume=true or another run_dir")
    rows = _log_rows(log_path, ppo.iteration)  # drop rows logged after the checkpoint
    with log_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, LOG_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with progress_bar(console) as bar, log_path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, LOG_COLUMNS, extrasaction="ignore")
        task = bar.add_task("meta-training", total=ppo.cfg.iterations, completed=ppo.iteration)

        def on_iteration(stats: dict) -> None:
            writer.writerow(stats)
            handle.flush()
            reward = stats["mean_episode_reward"]
            bar.update(task, advance=1, description=f"meta-training (reward {reward:+.2f})"
                       if math.isfinite(reward) else "meta-training")
            if ppo.iteration % int(cfg.checkpoint_every) == 0 or ppo.iteration == ppo.cfg.iterations:
                atomic_save({"ppo": ppo.state_dict(), "env": env.state_dict()}, checkpoint)

        ppo.train(on_iteration)
    policy_path = run_dir / "policy.pt"
    save_policy(ppo.agent, policy_path, OmegaConf.to_container(cfg, resolve=True))
    return policy_path
