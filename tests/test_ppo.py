"""PPO's learning signal on LHOPT-shaped batches: sparse final rewards, whole-episode minibatches."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lhopt_cli.config.compose import compose
from lhopt_cli.control.policy import lhopt_agent
from lhopt_cli.control.ppo import PPO, PPOConfig, episode_weights


def episode_group(returns: list[float], steps: int) -> dict:
    """One worker's episode group as workers.py returns it: `len(returns)` episodes of `steps`
    decisions, rewarded only at the end, valued 0 by the critic."""
    n = len(returns)
    rewards = torch.zeros(steps, n)
    rewards[-1] = torch.tensor(returns)
    dones = torch.zeros(steps, n)
    dones[0] = 1.0  # each column starts a fresh episode
    return {"rewards": rewards, "values": torch.zeros(steps, n), "dones": dones,
            "next_done": torch.ones(n), "next_value": torch.zeros(n)}


def meta_training_ppo() -> PPO:
    """PPO with the shipped meta-training config (conf/ppo/default.yaml)."""
    cfg = compose("train_policy", [])
    return PPO(None, lhopt_agent(), PPOConfig(**OmegaConf.to_container(cfg.ppo, resolve=True)))


RETURNS = [-2.1, -1.3, -0.9, -0.5, -0.35, -0.1, 0.2, 0.6]  # not centred: rewards early in meta-training


@pytest.mark.parametrize("lengths", [(16, 16), (64, 64), (128, 128), (16, 128)])
def test_every_step_of_an_episode_above_the_batch_mean_gets_a_positive_advantage(lengths):
    ppo = meta_training_ppo()
    batches = [episode_group(RETURNS[:4], lengths[0]), episode_group(RETURNS[4:], lengths[1])]
    mean = float(np.mean(RETURNS))
    for batch, (advantages, _) in zip(batches, ppo.advantages(batches)):
        for j, outcome in enumerate(batch["rewards"][-1].tolist()):
            column = advantages[:, j]
            if outcome > mean:
                assert (column > 0).all(), (outcome, column[:4])
            else:
                assert (column < 0).all(), (outcome, column[:4])


def test_episodes_weigh_the_same_however_long():
    dones = torch.zeros(6, 2)
    dones[0, 0] = dones[4, 0] = 1.0  # column 0: episodes of 4 and 2 steps; column 1: one of 6
    weights = episode_weights(dones)
    assert weights[:, 0].tolist() == pytest.approx([0.25] * 4 + [0.5] * 2)
    assert weights[:, 1].tolist() == pytest.approx([1 / 6] * 6)


def test_minibatches_hold_several_whole_episodes_across_groups():
    ppo = meta_training_ppo()
    batches = [episode_group([0.0] * 8, 128), episode_group([0.0] * 8, 128)]
    plan = ppo.minibatches(batches)
    seen = [(k, int(j)) for minibatch in plan for k, columns in minibatch for j in columns]
    assert sorted(seen) == [(k, j) for k in range(2) for j in range(8)]  # every episode once per epoch
    assert all(sum(len(columns) for _, columns in minibatch) >= ppo.cfg.minibatch_episodes for minibatch in plan)
    assert any(len(minibatch) > 1 for minibatch in plan)  # minibatches draw from both groups


def test_an_update_on_mixed_length_groups_runs_and_moves_the_policy():
    ppo = meta_training_ppo()
    agent = ppo.agent
    batches = []
    for returns, steps in (([1.0, -1.0, 0.5], 16), ([0.2, -0.4, 0.9], 40)):
        batch = episode_group(returns, steps)
        obs = torch.randn(steps, len(returns), agent.obs_rms.mean.numel())
        state = agent.initial_state(len(returns))
        with torch.no_grad():
            action, logprob, _, value, _ = agent.get_action_and_value(obs.reshape(steps * len(returns), -1), state,
                                                                      batch["dones"].reshape(-1))
        batch.update(obs=obs, actions=action.reshape(steps, len(returns), -1), logprobs=logprob.reshape(steps, -1),
                     values=value.reshape(steps, -1), start_state=state)
        batches.append(batch)
    before = [p.detach().clone() for p in agent.parameters()]
    stats = ppo._update(batches, ppo.advantages(batches))
    assert np.isfinite([stats["pg_loss"], stats["v_loss"], stats["approx_kl"]]).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.parameters()))
