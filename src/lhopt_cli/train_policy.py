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
from .control.features import FEATURE_NAMES
from .control.policy import RecurrentActorCritic
from .control.ppo import PPO, PPOConfig
from .control.workers import LocalWorkers, RayWorkers, initial_worker_state
from .executor import resolve_workers
from .progress import progress_bar
from .tasks.families import FamilyError, TaskFamily

LOG_COLUMNS = ["iteration", "global_step", "episodes", "mean_episode_reward", "episodes_per_s", "approx_kl",
               "clipfrac", "entropy", "explained_variance", "pg_loss", "v_loss", "rollout_s", "update_s"]


def make_workers(cfg: DictConfig, family_cfg: dict, env_kwargs: dict, agent_kwargs: dict):
    """The rollout workers on the chosen executor: local (this process or local processes) or Ray."""
    count, ex = int(cfg.workers), cfg.executor
    if count < 1:
        raise ConfigError(f"workers must be >= 1 (got {count})")
    if ex.name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("executor=ray needs Ray: pip install 'lhopt-cli[ray]'") from None
        return RayWorkers(count, family_cfg, env_kwargs, agent_kwargs, address=ex.address,
                          num_cpus=ex.num_cpus, max_restarts=int(ex.max_restarts))
    return LocalWorkers(count, resolve_workers(int(ex.workers), count), family_cfg, env_kwargs, agent_kwargs)


def build(cfg: DictConfig) -> PPO:
    family_cfg = OmegaConf.to_container(cfg.task_family, resolve=True)
    try:
        TaskFamily(family_cfg)
    except FamilyError as err:
        raise ConfigError(str(err)) from None
    c = cfg.controller
    env_kwargs = {"num_envs": int(cfg.envs), "decisions": (int(c.decisions[0]), int(c.decisions[1])),
                  "stats_every": int(c.stats_every), "reuse": int(family_cfg.get("reuse", 2)),
                  "randomize_start": "start_lr_scale" not in family_cfg,
                  "start_lr_scale": float(family_cfg.get("start_lr_scale", 1.0)),
                  "reward_extrapolation": float(cfg.reward_extrapolation)}
    agent_kwargs = {"hidden": int(c.hidden), "obs_clip": float(c.obs_clip)}
    torch.manual_seed(int(cfg.seed))
    agent = RecurrentActorCritic(len(FEATURE_NAMES), list(NVEC), **agent_kwargs,
                                 prior_logits=prior_logits(float(c.noop_logit), float(c.restart_none_logit)))
    ppo_cfg = PPOConfig(**OmegaConf.to_container(cfg.ppo, resolve=True))
    states = [initial_worker_state(int(cfg.seed), i, family_cfg, env_kwargs) for i in range(int(cfg.workers))]
    workers = make_workers(cfg, family_cfg, env_kwargs, agent_kwargs)
    return PPO(None, agent, ppo_cfg, seed=int(cfg.seed), workers=workers, worker_states=states)


def _log_rows(path: Path, keep_through: int) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as handle:
        return [row for row in csv.DictReader(handle) if int(row["iteration"]) <= keep_through]


def run(cfg: DictConfig, run_dir: Path, console: Console | None = None) -> Path:
    console = console or Console(soft_wrap=True)
    checkpoint = run_dir / "checkpoint.pt"
    log_path = run_dir / "meta_train.csv"
    if not cfg.resume and (log_path.exists() or checkpoint.exists()):
        raise ConfigError(f"{run_dir} already holds a meta-training run: pass resume=true or another run_dir")
    ppo = build(cfg)
    try:
        _train(cfg, ppo, run_dir, checkpoint, log_path, console)
    finally:
        ppo.workers.close()
    policy_path = run_dir / "policy.pt"
    save_policy(ppo.agent, policy_path, OmegaConf.to_container(cfg, resolve=True))
    return policy_path


def _train(cfg: DictConfig, ppo: PPO, run_dir: Path, checkpoint: Path, log_path: Path, console: Console) -> None:
    if cfg.resume and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if "env" in state and state["ppo"].get("worker_states") is None:  # a one-env checkpoint of v0.1
            state["ppo"]["worker_states"] = [{**ppo.worker_states[0], "env": state["env"]}]
        if len(state["ppo"]["worker_states"]) != len(ppo.worker_states):
            raise ConfigError(f"{checkpoint} was written with {len(state['ppo']['worker_states'])} rollout "
                              f"workers; resume it with workers={len(state['ppo']['worker_states'])}")
        ppo.load_state_dict(state["ppo"])
        console.print(f"Resuming from iteration {ppo.iteration} of {ppo.cfg.iterations} ({checkpoint})")
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
                atomic_save({"ppo": ppo.state_dict()}, checkpoint)

        ppo.train(on_iteration)
