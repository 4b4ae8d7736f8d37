"""Features, actions, reward and the environment of the LHOPT controller."""
import math

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from lhopt_cli.control.actions import (BOUNDS, CLIP_BOUNDS, EVAL_START, HEAD_NAMES, HEADS, NO_OP, NVEC, apply_action,
                                       prior_logits, randomized_start, restart_kind)
from lhopt_cli.control.env import LhoptEnv, VecLhoptEnv
from lhopt_cli.control.features import FEATURE_NAMES, FeatureTracker, history_cdf, to_vector
from lhopt_cli.control.policy import RecurrentActorCritic, lhopt_agent
from lhopt_cli.control.protocol import ObservationProtocol, decision_steps
from lhopt_cli.control.rollout import run_policy
from lhopt_cli.control.reward import PowerLawFit, fit_reference, log_speedup_reward, power_law
from lhopt_cli.inner import HParams
from lhopt_cli.inner.stats import optimizer_stats
from lhopt_cli.tasks.families import TaskFamily

TINY_FAMILY = {"kinds": {"nqm": {"dim": [10, 20], "condition": [10.0, 100.0], "noise": [0.1, 0.3],
                                 "steps": [30, 40], "batch_size": [8, 16]}},
               "eval_points": 14, "reuse": 2}


# --- features ---------------------------------------------------------------------------
def _stats(scale_loss=1.0, scale_params=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(1, 500, generator=gen) * scale_params
    g = torch.randn(1, 500, generator=gen) * scale_loss / scale_params  # dL/dw scales with L / w
    m = 0.7 * g + 0.1 * torch.randn(1, 500, generator=gen) * scale_loss / scale_params
    v_hat_sqrt = g.abs() + 1e-3 * scale_loss / scale_params
    direction = m / (v_hat_sqrt + 1e-8 * scale_loss / scale_params)
    stats = optimizer_stats(p, g, m, v_hat_sqrt, direction, torch.tensor([[1e-8 * scale_loss / scale_params]]))
    return {k: float(v[0]) for k, v in stats.items()} | {"clipped": 0.0}


@pytest.mark.parametrize("scale_loss, scale_params", [(1000.0, 1.0), (1.0, 100.0), (0.01, 0.1)])
def test_features_are_invariant_to_loss_and_parameter_scale(scale_loss, scale_params):
    def run(sl, sp):
        # the start values scale with the problem as a user would pick them: lr with the weights
        hp = HParams(lr=1e-3 * sp, eps=1e-8 * sl / sp)
        tracker = FeatureTracker(hp, num_params=500)
        out = []
        for k, (train, valid) in enumerate([(2.3, 2.4), (1.7, 1.9), (1.2, 1.5), (1.25, 1.4)]):
            out.append(to_vector(tracker.features(k / 4, _stats(sl, sp, seed=k), 1, train * sl, valid * sl, hp)))
        return np.stack(out)

    np.testing.assert_allclose(run(scale_loss, scale_params), run(1.0, 1.0), atol=1e-5)


def test_history_cdf_weights_recent_values_more():
    history = [1.0, 2.0, 3.0, 4.0]
    assert history_cdf(history, 10.0, 2.5) == 1.0 and history_cdf(history, 0.0, 2.5) == 0.0
    # 2.5 is above the two oldest values: its percentile shrinks as recent values weigh more
    assert history_cdf(history, 2.5, 20.0) < history_cdf(history, 2.5, 1.25) < 0.5
    assert history_cdf([], 1.0, 5.0) == 0.5


def test_feature_vector_has_the_named_fixed_order():
    tracker = FeatureTracker(EVAL_START, 100)
    feats = tracker.features(0.5, _stats(), 1, math.nan, math.nan, EVAL_START)
    assert list(feats) == list(FEATURE_NAMES)
    assert feats["loss_is_nan"] == 1.0 and all(math.isfinite(v) for v in feats.values())


# --- actions ----------------------------------------------------------------------------
def test_no_op_action_keeps_the_hyperparameters():
    hp, code = apply_action(EVAL_START, NO_OP)
    assert hp == EVAL_START and restart_kind(code) == ("none", -1)


def test_actions_multiply_and_respect_bounds():
    up = [len(HEADS[h]) - 1 if h != "restart" else 0 for h in HEAD_NAMES]
    down = [0] * len(HEAD_NAMES)
    hp, _ = apply_action(EVAL_START, up)
    assert hp.lr == pytest.approx(2e-3) and 1 - hp.beta1 == pytest.approx(0.2)
    for action in (up, down):
        hp = EVAL_START
        for _ in range(200):
            hp, _ = apply_action(hp, action)
        assert BOUNDS["lr"][0] <= hp.lr <= BOUNDS["lr"][1]
        assert BOUNDS["one_minus_beta1"][0] * (1 - 1e-9) <= 1 - hp.beta1 <= BOUNDS["one_minus_beta1"][1] + 1e-12
        assert BOUNDS["one_minus_beta2"][0] * (1 - 1e-9) <= 1 - hp.beta2 <= BOUNDS["one_minus_beta2"][1] + 1e-12
        assert BOUNDS["eps"][0] <= hp.eps <= BOUNDS["eps"][1]
        assert BOUNDS["weight_decay"][0] <= hp.weight_decay <= BOUNDS["weight_decay"][1]
        assert CLIP_BOUNDS[0] <= hp.clip <= CLIP_BOUNDS[1]
    assert [restart_kind(c) for c in range(7)] == [("none", -1), ("save", 0), ("save", 1), ("save", 2),
                                                   ("load", 0), ("load", 1), ("load", 2)]


def test_randomized_starts_span_the_papers_ranges():
    rng = np.random.default_rng(0)
    lrs = np.array([randomized_start(rng).lr for _ in range(2000)])
    assert lrs.min() >= 1e-5 * 0.999 and lrs.max() <= 1e-1 * 1.001
    assert lrs.min() < 2e-5 and lrs.max() > 5e-2  # log-uniform over 4 decades around 1e-3


# --- reward -----------------------------------------------------------------------------
def _reference_curve(total=1000):
    steps = np.linspace(0, total, 15).round()
    return steps, power_law(steps, 0.5, 20.0, 0.6, 50.0)


def test_reward_is_log_speedup_on_a_curve_of_known_speedup():
    steps, losses = _reference_curve()
    fit = fit_reference(steps, losses, 1000)
    # reaching the reference's final loss in half the steps: speedup 2
    assert log_speedup_reward(fit, losses[-1], 500) == pytest.approx(math.log(2), abs=0.05)
    # reaching in all 1000 steps what the reference reaches at 2000 (within the 2x extrapolation)
    assert log_speedup_reward(fit, power_law(2000, 0.5, 20.0, 0.6, 50.0), 1000) == pytest.approx(math.log(2), abs=0.05)
    assert log_speedup_reward(fit, losses[-1], 1000) == pytest.approx(0.0, abs=0.05)


def test_reward_is_clipped_and_extrapolation_capped():
    steps, losses = _reference_curve()
    fit = fit_reference(steps, losses, 1000)
    assert log_speedup_reward(fit, 0.0, 1000) == pytest.approx(math.log(2))  # below E: capped at 2T
    assert log_speedup_reward(fit, losses[0] * 10, 1000) == -3.0
    assert log_speedup_reward(fit, float("nan"), 1000) == -3.0
    wider = fit_reference(steps, losses, 1000, extrapolation=20.0)  # a higher cap: more room to reward
    assert log_speedup_reward(wider, 0.0, 1000) == pytest.approx(math.log(20))
    assert log_speedup_reward(wider, power_law(5000, 0.5, 20.0, 0.6, 50.0), 1000) == pytest.approx(math.log(5), abs=0.1)
    # just above E the inverted power law overflows a float: still the 2T cap, no OverflowError
    steep = PowerLawFit(e=1.0, a=1e6, alpha=0.01, t0=1.0, total_steps=1000)
    assert log_speedup_reward(steep, 1.0 + 1e-12, 1000) == pytest.approx(math.log(2))


def test_prior_logits_make_the_untrained_policy_keep_its_hyperparameters():
    agent = RecurrentActorCritic(len(FEATURE_NAMES), list(NVEC), 32, prior_logits=prior_logits(3.0, 6.0))
    obs = torch.randn(64, len(FEATURE_NAMES))
    action, _ = agent.act(obs, agent.initial_state(64), torch.zeros(64), greedy=True)
    assert (action == torch.tensor(NO_OP)).all()
    hidden, _ = agent.get_states(obs, agent.initial_state(64), torch.zeros(64))
    restart = agent.distributions(hidden)[HEAD_NAMES.index("restart")].probs[:, 0]
    assert (restart > 0.97).all()  # a reload at most every few dozen decisions
    uniform = RecurrentActorCritic(len(FEATURE_NAMES), list(NVEC), 32)
    hidden, _ = uniform.get_states(obs, uniform.initial_state(64), torch.zeros(64))
    assert uniform.distributions(hidden)[HEAD_NAMES.index("restart")].probs[:, 0].max() < 0.2


# --- environment ------------------------------------------------------------------------
def test_env_passes_gymnasiums_env_checker():
    env = LhoptEnv(TaskFamily(TINY_FAMILY), decisions=(2, 4), protocol={"stats_every": 2})
    check_env(env, skip_render_check=True)


def test_vector_env_runs_whole_episodes_and_rewards_at_the_end():
    env = VecLhoptEnv(TaskFamily(TINY_FAMILY), num_envs=3, seed=1, decisions=(3, 5), protocol={"stats_every": 2})
    obs, _ = env.reset(seed=1)
    assert obs.shape == (3, len(FEATURE_NAMES)) and np.isfinite(obs).all()
    steps = 0
    while True:
        obs, reward, term, trunc, info = env.step(np.tile(NO_OP, (3, 1)))
        steps += 1
        if term.all():
            break
        assert (reward == 0).all()
    assert 3 <= steps <= 6
    assert np.all(np.abs(reward) <= 3) and set(info) >= {"episode_reward", "final_valid_loss"}


def test_restart_action_restores_the_saved_member():
    env = VecLhoptEnv(TaskFamily(TINY_FAMILY), num_envs=1, seed=2, decisions=(6, 6), protocol={"stats_every": 2},
                      randomize_start=False)
    env.reset(seed=2)
    save = list(NO_OP)
    save[HEAD_NAMES.index("restart")] = 1  # save to register 0
    saved = env.run.save_member(0)
    env.step(np.array([save]))
    registered = env.trackers[0].registers[0].state
    for a, b in zip(saved["params"], registered["params"]):
        assert torch.equal(a, b)
    env.step(np.array([NO_OP]))
    moved = env.run.save_member(0)["params"]
    assert any(not torch.equal(a, b) for a, b in zip(moved, registered["params"]))
    load = list(NO_OP)
    load[HEAD_NAMES.index("restart")] = 4  # load register 0
    env._act(np.array([load]))
    for a, b in zip(env.run.save_member(0)["params"], registered["params"]):
        assert torch.equal(a, b)


# --- every decision is measured ----------------------------------------------------------
def _nqm(steps: int) -> dict:
    return {"name": "nqm", "dim": 10, "condition": 10.0, "noise": 0.1, "steps": steps, "batch_size": 8,
            "eval_points": 25, "max_steps": None, "valid_size": None}


def spy_on_features(monkeypatch) -> list[tuple[FeatureTracker, int]]:
    """Records (tracker, statistics count) for every feature computation."""
    calls = []
    original = FeatureTracker.features

    def spy(self, progress, stats, count, *args, **kwargs):
        calls.append((self, count))
        return original(self, progress, stats, count, *args, **kwargs)

    monkeypatch.setattr(FeatureTracker, "features", spy)
    return calls


MEASURED = ("grad_norm", "rel_update", "noise_scale")


@pytest.mark.parametrize("total, decisions, interval", [(7, 6, 1), (12, 5, 2), (18, 5, 3)])
def test_every_decision_of_an_episode_sees_measured_statistics(monkeypatch, total, decisions, interval):
    calls = spy_on_features(monkeypatch)
    env = VecLhoptEnv(TaskFamily(TINY_FAMILY), num_envs=2, autoreset=False,
                      protocol={"stats_every": 4, "decisions": decisions}, fixed={"task": _nqm(total), "seeds": [0, 1]})
    env.reset()
    assert set(np.diff(env.boundaries)) == {interval}  # the intervals this case is about
    while not env.step(np.tile(NO_OP, (2, 1)))[2].all():
        pass
    assert len(calls) == 2 * (decisions + 1) and all(count >= 1 for _, count in calls)
    for tracker in env.trackers:  # one measured value per interval, no placeholder among them
        for name in MEASURED:
            assert len(tracker.history[name]) == decisions + 1
            assert all(math.isfinite(v) and v != 0.0 for v in tracker.history[name])


def test_an_unmeasured_interval_is_shown_neutral_and_kept_out_of_the_histories():
    tracker = FeatureTracker(EVAL_START, 500)
    for k in range(3):
        tracker.features(k / 4, _stats(seed=k), 1, 2.0 - 0.1 * k, math.nan, EVAL_START)
    before = {name: list(values) for name, values in tracker.history.items()}
    feats = tracker.features(0.75, {}, 0, None, math.nan, EVAL_START, valid_is_new=False)
    assert tracker.history == before
    assert feats["log_rel_update"] == 0.0 and feats["noise_scale"] == 0.0 and feats["loss_is_nan"] == 0.0
    assert all(feats[f"cdf_{name}_{s:g}"] == 0.5 for name in ("rel_update", "noise_scale", "train_loss")
               for s in (1.25, 20.0))


# --- actions that cannot act are masked --------------------------------------------------
def _favours_loading_register_1() -> RecurrentActorCritic:
    """An agent whose restart head wants 'load register 1' above everything, as the old bundled
    policy did at up to 40 of 64 decisions."""
    logits = prior_logits(3.0, 6.0)
    offset = sum(NVEC[: HEAD_NAMES.index("restart")])
    logits[offset + 5] = 12.0  # restart choice 5: load register 1
    torch.manual_seed(0)
    return lhopt_agent(32, prior_logits=logits)


def test_a_load_from_an_empty_register_is_never_chosen_and_carries_no_probability():
    agent = _favours_loading_register_1()
    obs = torch.zeros(32, len(FEATURE_NAMES))  # no register filled
    restart = HEAD_NAMES.index("restart")
    greedy, _ = agent.act(obs, agent.initial_state(32), torch.zeros(32), greedy=True)
    sampled, _ = agent.act(obs, agent.initial_state(32), torch.zeros(32), generator=torch.Generator().manual_seed(1))
    assert not (greedy[:, restart] >= 4).any() and not (sampled[:, restart] >= 4).any()
    # PPO's log-probabilities are those of the masked distribution: the feasible choices hold all of it
    hidden, _ = agent.get_states(obs, agent.initial_state(32), torch.zeros(32))
    probs = agent.distributions(hidden, obs)[restart].probs
    assert torch.allclose(probs[:, :4].sum(-1), torch.ones(32)) and (probs[:, 4:] == 0).all()
    _, logprob, _, _, _ = agent.get_action_and_value(obs, agent.initial_state(32), torch.zeros(32), greedy)
    assert torch.isfinite(logprob).all()
    filled = obs.clone()
    filled[:, FEATURE_NAMES.index("register1_filled")] = 1.0
    greedy, _ = agent.act(filled, agent.initial_state(32), torch.zeros(32), greedy=True)
    assert (greedy[:, restart] == 5).all()  # a filled register can be loaded


def test_the_decision_log_records_only_restarts_that_happened():
    agent = _favours_loading_register_1()
    (run,) = run_policy(agent, _nqm(40), [0], ObservationProtocol(decisions=12, eval_points=25), greedy=True)
    assert len(run.decisions) == 12
    assert all(row["restart"] == "none" for row in run.decisions)  # nothing was ever saved


@pytest.mark.parametrize("total", [2, 9, 16, 60, 100, 175, 1000, 2000])
@pytest.mark.parametrize("decisions, min_interval", [(64, 1), (64, 8), (16, 8), (128, 16), (3, 50)])
def test_decisions_are_spaced_at_least_min_interval_apart_where_the_run_allows(total, decisions, min_interval):
    steps = decision_steps(total, decisions, min_interval)
    bounds = [0, *steps, total]
    gaps = np.diff(bounds)
    assert 1 <= len(steps) <= decisions and (gaps >= 1).all() and steps == sorted(set(steps))
    if total >= 2 * min_interval:  # room for two intervals: every interval has min_interval steps
        assert gaps.min() >= min_interval
        assert len(steps) == min(decisions, total // min_interval - 1, total - 1)
    else:
        assert len(steps) == 1  # a run too short still gets one decision


def test_a_protocol_without_min_interval_is_one_written_before_it_existed():
    old = {"decisions": 64, "stats_every": 4, "eval_points": 25, "parameter_count": "all"}
    assert ObservationProtocol.from_dict(old).min_interval == 1
    assert decision_steps(100, 64) == decision_steps(100, 64, 1)


def test_run_policy_reports_each_seeds_inner_step_as_it_goes():
    from lhopt_cli.control.checkpoint import load_policy
    from lhopt_cli.loop.controller import default_policy_path

    agent, _ = load_policy(default_policy_path())
    heard = []
    runs = run_policy(agent, _nqm(40), [0, 1], ObservationProtocol(decisions=12, eval_points=25), greedy=True,
                      progress=lambda k, step: heard.append((k, step)))
    assert len(runs) == 2 and {k for k, _ in heard} == {0, 1}
    for k in (0, 1):  # each seed's run is heard up to its last step
        steps = [step for kk, step in heard if kk == k]
        assert len(steps) >= 2 and steps[-1] == 40 and 0 <= min(steps)
