"""The supervised signal beside PPO's: lr labels toward each instance's best sweep lr, carried by
the rollouts and learned by the lr head (ppo.imitation_coef)."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from lhopt_cli.control.actions import HEADS, NO_OP, NVEC, lr_label
from lhopt_cli.control.env import VecLhoptEnv
from lhopt_cli.control.features import FEATURE_NAMES
from lhopt_cli.control.policy import lhopt_agent
from lhopt_cli.control.ppo import PPO, PPOConfig
from lhopt_cli.control.reference import ReferenceSweep, best_setting
from lhopt_cli.control.workers import RolloutWorker, initial_worker_state
from lhopt_cli.tasks.families import TaskFamily

from test_tuned_reference import SWEEP_SMOKE, TINY_FAMILY

LR_CHOICES = HEADS["lr"]  # 0.5, 0.707, 0.9, 1.0, 1.1, 1.414, 2.0


@pytest.mark.parametrize("lr, target, factor", [
    (1e-3, 1e-2, 2.0),      # far above: the largest step up
    (1e-3, 1e-5, 0.5),      # far below: the largest step down
    (1e-3, 1e-3, 1.0),      # there: keep it
    (1e-3, 1.2e-3, 1.1),    # |log 1.1e-3/1.2e-3| = 0.087 < |log 1e-3/1.2e-3| = 0.182
    (1e-3, 6e-4, 0.707),    # |log 7.07e-4/6e-4| = 0.164 < |log 5e-4/6e-4| = 0.182
    (1.0, 5.0, 1.0),        # at the upper bound every step up clips to it: the no-op of those
])
def test_the_label_is_the_lr_choice_that_lands_closest_to_the_target_in_log_distance(lr, target, factor):
    assert LR_CHOICES[lr_label(lr, target)] == factor


def test_a_label_needs_positive_learning_rates():
    with pytest.raises(ValueError, match="positive learning rates"):
        lr_label(0.0, 1e-3)


def test_every_observation_carries_the_label_toward_the_instances_best_lr_from_either_side():
    sweep = ReferenceSweep(lrs=(1e-3, 1e-2, 1e-1), schedules=("constant",))
    env = VecLhoptEnv(TaskFamily(TINY_FAMILY), num_envs=16, seed=3, decisions=(3, 4), autoreset=False,
                      reference_sweep=sweep, start_around_best=30.0, label_lr=True)
    env.reset()
    _, curves = env.sweep_cache.get(env.instance, env.task, env.instance_seed)
    best, _ = best_setting(sweep, env.task, curves)
    assert env.label_target == best
    factors = set()
    for _ in range(3):
        expected = [lr_label(ctx.hparams.lr, best) if env.run.active[ctx.index] else -1 for ctx in env.run.ctx]
        assert env.lr_labels.tolist() == expected
        factors |= {LR_CHOICES[k] for k in expected if k >= 0}
        env.step(np.tile(NO_OP, (16, 1)))
    assert {0.5, 2.0} <= factors  # starts on both sides of the best are sent toward it
    with pytest.raises(ValueError, match="lr labels need a reference sweep"):
        VecLhoptEnv(TaskFamily(TINY_FAMILY), num_envs=2, label_lr=True)


def test_a_rollout_batch_holds_one_label_per_decision_in_step_with_the_observations():
    sweep = ReferenceSweep(lrs=(1e-3, 1e-2), schedules=("constant",))
    kwargs = {"num_envs": 3, "decisions": (3, 4), "reference_sweep": sweep, "label_lr": True, "start_around_best": 10.0}
    worker = RolloutWorker(TINY_FAMILY, kwargs, {"hidden": 8})
    batch, _ = worker.collect(worker.agent.state_dict(), initial_worker_state(0, 0, TINY_FAMILY, kwargs))
    assert batch["lr_labels"].shape == batch["obs"].shape[:2] and batch["lr_labels"].dtype == torch.int64
    assert ((batch["lr_labels"] >= 0) & (batch["lr_labels"] < NVEC[0])).all()
    plain = RolloutWorker(TINY_FAMILY, {**kwargs, "label_lr": False}, {"hidden": 8})
    assert "lr_labels" not in plain.collect(plain.agent.state_dict(),
                                            initial_worker_state(0, 0, TINY_FAMILY, {**kwargs, "label_lr": False}))[0]


def _labelled_batch(label: int, steps: int = 6, n: int = 4) -> dict:
    """Whole episodes with no reward (PPO's own loss gives no gradient) whose every decision is labelled `label`."""
    generator = torch.Generator().manual_seed(0)
    dones = torch.zeros(steps, n)
    dones[0] = 1.0
    agent = lhopt_agent(hidden=8)
    return {"obs": torch.randn(steps, n, len(FEATURE_NAMES), generator=generator),
            "actions": torch.tensor(NO_OP).expand(steps, n, len(NVEC)).clone(), "logprobs": torch.zeros(steps, n),
            "rewards": torch.zeros(steps, n), "values": torch.zeros(steps, n), "dones": dones,
            "next_done": torch.ones(n), "next_value": torch.zeros(n), "start_state": agent.initial_state(n),
            "lr_labels": torch.full((steps, n), label, dtype=torch.int64)}


def _greedy_lr_choices(agent, batch: dict) -> set[int]:
    steps, n = batch["rewards"].shape
    with torch.no_grad():
        hidden, _ = agent.get_states(batch["obs"].reshape(steps * n, -1), agent.initial_state(n), batch["dones"].reshape(-1))
        return set(agent.distributions(hidden, batch["obs"].reshape(steps * n, -1))[0].probs.argmax(-1).tolist())


@pytest.mark.parametrize("coef", [0.0, 1.0])
def test_the_imitation_loss_teaches_the_lr_head_the_label_and_nothing_without_it(coef):
    torch.manual_seed(0)
    agent = lhopt_agent(hidden=8, prior_logits=None)
    ppo = PPO(None, agent, PPOConfig(learning_rate=1e-2, imitation_coef=coef, minibatch_episodes=1, ent_coef=0.0,
                                     vf_coef=0.0), seed=0)
    batch = _labelled_batch(label=6)  # x2 at every decision; no reward, entropy or value loss: only the labels teach
    before = _greedy_lr_choices(agent, batch)
    for _ in range(15):
        stats = ppo._update([batch], ppo.advantages([batch]))
    if coef:
        assert stats["label_agreement"] == 1.0 and stats["imitation_loss"] < 0.2
        assert _greedy_lr_choices(agent, batch) == {6}
    else:
        assert math.isnan(stats["imitation_loss"]) and math.isnan(stats["label_agreement"])
        assert _greedy_lr_choices(agent, batch) == before


def test_train_policy_with_imitation_logs_the_lr_heads_distance_from_the_teacher(run_cli, tmp_path):
    result = run_cli("train-policy", *SWEEP_SMOKE, "task_family.start_around_best=30", "ppo.imitation_coef=1.0",
                     "ppo.iterations=2", f"run_dir={tmp_path / 'run'}")
    assert result.exit_code == 0, result.output
    log = pd.read_csv(tmp_path / "run" / "meta_train.csv")
    assert log.imitation_loss.gt(0).all() and log.label_agreement.between(0, 1).all()
    refused = run_cli("train-policy", *SWEEP_SMOKE, "ppo.imitation_coef=1.0", "reward.reference=defaults",
                      f"run_dir={tmp_path / 'refused'}")
    assert refused.exit_code != 0 and "ppo.imitation_coef needs reward.reference=sweep" in str(refused.exception or refused.output)
    assert not (tmp_path / "refused").exists()
    negative = run_cli("train-policy", *SWEEP_SMOKE, "ppo.imitation_coef=-1", f"run_dir={tmp_path / 'negative'}")
    assert negative.exit_code != 0 and "imitation_coef" in str(negative.exception or negative.output)
