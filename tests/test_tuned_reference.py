"""Meta-training against a tuned reference: the sweep reward, leave-one-out advantages, the
entropy bonus over heads, the KL stop, Polyak weights and evaluation starts."""
import math
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import LHOPT, lhopt_env
from lhopt_cli.config.compose import ConfigError
from lhopt_cli.control.actions import EVAL_START, NO_OP
from lhopt_cli.control.checkpoint import load_policy, save_policy
from lhopt_cli.control.env import VecLhoptEnv
from lhopt_cli.control.policy import lhopt_agent
from lhopt_cli.control.ppo import PPO, PPOConfig, leave_one_out
from lhopt_cli.control.privileged import PRIVILEGED_NAMES, privileged_vector
from lhopt_cli.control.protocol import ObservationProtocol
from lhopt_cli.control.reference import ReferenceSweep, best_setting, curve_on
from lhopt_cli.control.reward import SWEEP_REWARD_CLIP, envelope_log_speedup
from lhopt_cli.inner import HParams, train_one_epoch
from lhopt_cli.inner.schedules import ScheduleHook
from lhopt_cli.results.speedup import speedup
from lhopt_cli.tasks import build_task
from lhopt_cli.tasks.families import TaskFamily

STEPS = list(range(0, 101, 4))  # 25 validation points after step 0, as the protocol's


def _curve(rate: float) -> list[float]:
    return [1.0 + 9.0 * math.exp(-rate * s / 100) for s in STEPS]


# --- the reward ---------------------------------------------------------------------------
def test_the_sweep_reward_is_the_log_of_the_speedup_evaluate_reports():
    references = [_curve(1.0), _curve(2.0)]
    faster = _curve(4.0)
    expected = speedup(STEPS, faster, references)
    assert expected > 1.5
    assert envelope_log_speedup(STEPS, faster, references) == pytest.approx(math.log(expected))
    assert envelope_log_speedup(STEPS, _curve(2.0), references) == pytest.approx(0.0, abs=1e-9)
    slower = envelope_log_speedup(STEPS, _curve(1.0), references)
    assert slower < 0


def test_a_10x_win_earns_more_than_a_3x_win():
    references = [_curve(1.0)]
    wins = {rate: envelope_log_speedup(STEPS, _curve(rate), references) for rate in (3.0, 10.0, 30.0)}
    assert wins[3.0] < wins[10.0] < wins[30.0] <= SWEEP_REWARD_CLIP[1]
    assert math.exp(wins[10.0]) > 5.0


def test_a_run_that_ends_diverged_earns_the_lowest_reward_whatever_it_reached_before():
    references = [_curve(1.0)]
    touched_then_blew_up = _curve(10.0)[:-1] + [math.nan]
    stopped_early = _curve(10.0)[:12]  # diverged: the curve ends there
    assert envelope_log_speedup(STEPS, touched_then_blew_up, references) == SWEEP_REWARD_CLIP[0]
    assert envelope_log_speedup(STEPS, stopped_early, references) == SWEEP_REWARD_CLIP[0]
    with pytest.raises(ValueError, match="no finite"):
        envelope_log_speedup(STEPS, _curve(1.0), [[math.inf] * len(STEPS)])


def test_curve_on_puts_a_diverged_runs_rows_on_the_validation_steps():
    rows = [{"step": 0, "valid_loss": 3.0}, {"step": 4, "valid_loss": 2.0}, {"step": 6, "valid_loss": 1.5}]
    assert curve_on([0, 4, 8, 12], rows) == [3.0, 2.0, math.inf, math.inf]


# --- the reference sweep --------------------------------------------------------------------
NQM = {"name": "nqm", "dim": 12, "condition": 30.0, "noise": 0.2, "steps": 40, "batch_size": 8,
       "eval_points": 10, "max_steps": None, "valid_size": None}


def test_the_sweep_runs_match_single_adamw_runs_with_the_episodes_seed():
    task = build_task(NQM)
    sweep = ReferenceSweep(lrs=(1e-2, 1e-1), schedules=("constant", "cosine"))
    steps, curves = sweep.curves(task, seed=5)
    assert steps == [0, *task.eval_steps()] and len(curves) == sweep.size == 4
    alone = train_one_epoch(task, 5, ScheduleHook("cosine", HParams(lr=1e-1)), HParams(lr=1e-1))
    assert curves[3] == pytest.approx(curve_on(steps, alone.curve), rel=1e-5)


@pytest.mark.parametrize("kwargs, message", [({"lrs": ()}, "at least one"), ({"lrs": (-1e-3,)}, "positive"),
                                             ({"lrs": (math.nan,)}, "positive"), ({"schedules": ("warmup",)}, "unknown schedule")])
def test_bad_sweeps_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReferenceSweep(**kwargs)


def _tiny_nqm() -> dict:
    """A small nqm task config, as the family draws them."""
    from lhopt_cli.config.compose import compose
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose("baseline_grid", ["task=nqm", "task.dim=10", "task.max_steps=20",
                                                            "task.eval_points=4"]).task, resolve=True)


TINY_FAMILY = {"kinds": {"nqm": {"dim": [10, 20], "condition": [10.0, 100.0], "noise": [0.1, 0.3],
                                 "steps": [30, 40], "batch_size": [8, 16]}},
               "eval_points": 10, "reuse": 1}


def _episode(env: VecLhoptEnv) -> dict:
    env.reset()
    while True:
        _, reward, term, _, info = env.step(np.tile(NO_OP, (env.num_envs, 1)))
        if term.all():
            return {**info, "reward": reward}


def test_with_a_sweep_every_member_runs_the_instances_seed_and_is_rewarded_over_its_envelope():
    sweep = ReferenceSweep(lrs=(1e-2, 1e-1), schedules=("constant",))
    env = VecLhoptEnv(TaskFamily(TINY_FAMILY), num_envs=3, seed=3, decisions=(3, 4), autoreset=False,
                      reference_sweep=sweep)
    info = _episode(env)
    assert env.run.seeds == [env.instance_seed] * 3
    steps, references = sweep.curves(env.task, env.instance_seed)  # recomputed apart from the env
    for result, reward in zip(env.run.results(), info["reward"]):
        assert reward == pytest.approx(envelope_log_speedup(steps, curve_on(steps, result.curve), references), abs=1e-6)
    assert info["reference_s"] > 0
    state = env.next_episode_state()
    other = VecLhoptEnv(TaskFamily(TINY_FAMILY), num_envs=3, seed=0, autoreset=False, reference_sweep=sweep)
    other.load_state_dict(state)
    assert other.instance_seed == env.instance_seed and other.instance == env.instance


def test_the_defaults_reference_keeps_distinct_seeds_per_member():
    env = VecLhoptEnv(TaskFamily(TINY_FAMILY), num_envs=3, seed=3, decisions=(3, 4), autoreset=False)
    _episode(env)
    assert len(set(env.run.seeds)) == 3 and env.instance_seed is None


@pytest.mark.parametrize("share, expected", [(1.0, 8), (0.0, 0)])
def test_a_share_of_members_starts_where_evaluation_starts(share, expected):
    env = VecLhoptEnv(TaskFamily(TINY_FAMILY), num_envs=8, seed=4, decisions=(3, 4), autoreset=False,
                      eval_start_share=share)
    env.reset()
    assert sum(start == EVAL_START for start in env.starts) == expected


def test_the_best_setting_is_the_sweep_member_with_the_lowest_final_loss_in_the_runs_own_units():
    sweep = ReferenceSweep(lrs=(1e-3, 1e-2, 1e-1), schedules=("constant", "cosine"))
    task = build_task({**_tiny_nqm(), "param_scale": 100.0})
    curves = [[2.0, 1.5], [2.0, 1.2], [2.0, 0.9], [2.0, 0.7], [2.0], [2.0, float("inf")]]  # lr x schedule, in order
    assert best_setting(sweep, task, curves) == (pytest.approx(1e-4), "cosine")  # 1e-2 / s at s = 100
    with pytest.raises(ValueError, match="every member of the reference sweep diverged"):
        best_setting(sweep, task, [[2.0, float("inf")]] * 6)


def test_starts_around_the_best_draw_the_lr_on_both_sides_of_the_instances_best():
    sweep = ReferenceSweep(lrs=(1e-3, 1e-2, 1e-1), schedules=("constant",))
    env = VecLhoptEnv(TaskFamily(TINY_FAMILY), num_envs=64, seed=5, decisions=(3, 4), autoreset=False,
                      reference_sweep=sweep, start_around_best=30.0, eval_start_share=0.25)
    env.reset()
    _, curves = env.sweep_cache.get(env.instance, env.task, env.instance_seed)
    best, _ = best_setting(sweep, env.task, curves)
    lrs = np.array([start.lr for start in env.starts if start != EVAL_START])
    assert 30 <= len(lrs) < 64  # a share stays where evaluation starts
    assert (lrs >= best / 30 * (1 - 1e-9)).all() and (lrs <= best * 30 * (1 + 1e-9)).all()
    assert (lrs < best / 3).sum() >= 5 and (lrs > best * 3).sum() >= 5  # both directions, log-uniform
    plain = VecLhoptEnv(TaskFamily(TINY_FAMILY), num_envs=64, seed=5, decisions=(3, 4), autoreset=False,
                        reference_sweep=sweep)
    plain.reset()
    assert plain.sweep_cache.seconds == 0  # off: the sweep waits for the episode's end, as before


@pytest.mark.parametrize("value", [0.5, 1.0, -3])
def test_a_spread_that_is_not_above_one_or_a_start_without_a_sweep_is_refused(value):
    with pytest.raises(ValueError, match="start_around_best needs a reference sweep"):
        VecLhoptEnv(TaskFamily(TINY_FAMILY), num_envs=2, reference_sweep=ReferenceSweep(), start_around_best=value)
    with pytest.raises(ValueError, match="start_around_best needs a reference sweep"):
        VecLhoptEnv(TaskFamily(TINY_FAMILY), num_envs=2, start_around_best=30.0)


# --- PPO ------------------------------------------------------------------------------------
def _group(returns: list[float], steps: int = 5) -> dict:
    n = len(returns)
    rewards = torch.zeros(steps, n)
    rewards[-1] = torch.tensor(returns)
    dones = torch.zeros(steps, n)
    dones[0] = 1.0
    return {"rewards": rewards, "values": torch.zeros(steps, n), "dones": dones, "next_done": torch.ones(n),
            "next_value": torch.zeros(n)}


def test_leave_one_out_compares_each_episode_with_the_others_on_its_instance():
    advantages = leave_one_out(_group([1.0, 2.0, 6.0]))
    assert advantages[:, 0].tolist() == pytest.approx([1.0 - 4.0] * 5)
    assert advantages[:, 2].tolist() == pytest.approx([6.0 - 1.5] * 5)
    # a group where every episode did alike teaches nothing, whatever its level
    assert leave_one_out(_group([-2.0, -2.0])).abs().max() == 0
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out(_group([1.0]))
    broken = _group([1.0, 2.0])
    broken["dones"][3, 0] = 1.0
    with pytest.raises(ValueError, match="whole episodes"):
        leave_one_out(broken)


def test_loo_advantages_are_relative_to_the_group_not_the_batch():
    ppo = PPO(None, lhopt_agent(), PPOConfig(advantage="loo"))
    good_instance, hard_instance = _group([3.0, 2.0]), _group([-2.0, -3.0])
    (a_good, _), (a_hard, _) = ppo.advantages([good_instance, hard_instance])
    assert a_good[0, 0] > 0 > a_good[0, 1] and a_hard[0, 0] > 0 > a_hard[0, 1]


def _lhopt_batch(seed: int = 0) -> list[dict]:
    """Two episode groups from the policy itself, rewards drawn at random."""
    torch.manual_seed(seed)
    agent = lhopt_agent()
    batches = []
    for _ in range(2):
        steps, n = 6, 4
        obs = torch.randn(steps, n, agent.obs_rms.mean.numel())
        dones = torch.zeros(steps, n)
        dones[0] = 1.0
        with torch.no_grad():
            action, logprob, _, value, _ = agent.get_action_and_value(obs.reshape(steps * n, -1),
                                                                       agent.initial_state(n), dones.reshape(-1))
        group = _group(torch.randn(n).tolist(), steps)
        group.update(obs=obs, actions=action.reshape(steps, n, -1), logprobs=logprob.reshape(steps, n),
                     values=value.reshape(steps, n), start_state=agent.initial_state(n))
        batches.append(group)
    return batches


def _updated_weights(cfg: PPOConfig) -> dict:
    torch.manual_seed(0)
    agent = lhopt_agent()
    ppo = PPO(None, agent, cfg)
    batches = _lhopt_batch()
    stats = ppo._update(batches, ppo.advantages(batches))
    return {**agent.state_dict(), "epochs": stats["update_epochs"]}


def test_the_mean_entropy_bonus_is_the_sum_over_the_seven_heads_divided_by_seven():
    summed = _updated_weights(PPOConfig(ent_coef=0.01, entropy_reduction="sum"))
    averaged = _updated_weights(PPOConfig(ent_coef=0.07, entropy_reduction="mean"))
    other = _updated_weights(PPOConfig(ent_coef=0.01, entropy_reduction="mean"))
    assert all(torch.allclose(summed[k], averaged[k], atol=1e-6) for k in summed if k != "epochs")
    assert any(not torch.allclose(summed[k], other[k], atol=1e-6) for k in summed if k != "epochs")


def test_an_update_stops_after_the_epoch_whose_kl_passes_target_kl():
    assert _updated_weights(PPOConfig(update_epochs=4))["epochs"] == 4
    # one minibatch per epoch here: epoch 1 measures its KL before its only step (0), epoch 2 after one
    assert _updated_weights(PPOConfig(update_epochs=4, target_kl=1e-12))["epochs"] == 2


def test_polyak_weights_are_the_exponential_average_of_the_weights_after_each_update():
    torch.manual_seed(0)
    ppo = PPO(None, lhopt_agent(), PPOConfig(polyak=0.5))
    start = {k: v.clone() for k, v in ppo.agent.state_dict().items()}
    batches = _lhopt_batch()
    ppo._update(batches, ppo.advantages(batches))
    ppo._update_polyak()
    after = ppo.agent.state_dict()
    averaged = ppo.polyak_agent().state_dict()
    name = "actor.0.weight"
    assert torch.allclose(averaged[name], 0.5 * start[name] + 0.5 * after[name])
    assert torch.equal(averaged["obs_rms.mean"], after["obs_rms.mean"])  # buffers are copied, not averaged
    assert PPO(None, lhopt_agent(), PPOConfig()).polyak_agent() is None


def _kl_to_start(cfg: PPOConfig, updates: int = 6) -> tuple[float, PPO, dict]:
    """KL(policy || its start) on a batch after `updates` updates, the PPO and its start weights."""
    torch.manual_seed(0)
    ppo = PPO(None, lhopt_agent(), cfg)
    start = lhopt_agent()
    start.load_state_dict(ppo.agent.state_dict())
    batches = _lhopt_batch()
    for _ in range(updates):
        stats = ppo._update(batches, ppo.advantages(batches))
    b = batches[0]
    obs, dones = b["obs"].reshape(-1, b["obs"].shape[-1]), b["dones"].reshape(-1)
    with torch.no_grad():
        new = ppo.agent.distributions(ppo.agent.get_states(obs, b["start_state"], dones)[0], obs)
        old = start.distributions(start.get_states(obs, b["start_state"], dones)[0], obs)
    kl = float(sum(torch.distributions.kl_divergence(n, o) for n, o in zip(new, old)).mean())
    return kl, ppo, {**start.state_dict(), "anchor_kl": stats["anchor_kl"]}


def test_the_anchor_penalty_holds_the_policy_near_its_start_and_the_start_stays_fixed():
    free, unanchored, _ = _kl_to_start(PPOConfig(learning_rate=3e-3))
    held, anchored, start = _kl_to_start(PPOConfig(learning_rate=3e-3, anchor_coef=3.0))
    assert free > 0.02 and held < 0.5 * free, (free, held)
    assert math.isnan(unanchored._update(_lhopt_batch(), unanchored.advantages(_lhopt_batch()))["anchor_kl"])
    assert 0 < start["anchor_kl"] < free  # the logged KL: the penalty's, after the last minibatch
    for name, value in anchored.anchor.state_dict().items():  # the anchor is the start, not trained
        assert torch.equal(value, start[name]), name
    assert not any(p.requires_grad for p in anchored.anchor.parameters())


def test_every_checkpoint_keeps_the_initial_weights_so_a_resume_anchors_to_the_run_start():
    _, anchored, start = _kl_to_start(PPOConfig(learning_rate=3e-3, anchor_coef=1.0), updates=2)
    state = anchored.state_dict()
    resumed = PPO(None, lhopt_agent(), PPOConfig(anchor_coef=1.0))  # other (random) weights at build
    resumed.load_state_dict(state)
    assert all(torch.equal(v, start[k]) for k, v in resumed.anchor.state_dict().items())
    # resumed without the penalty, then with it again: still the run's start
    unanchored = PPO(None, lhopt_agent(), PPOConfig())
    unanchored.load_state_dict(state)
    again = PPO(None, lhopt_agent(), PPOConfig(anchor_coef=1.0))
    again.load_state_dict(unanchored.state_dict())
    assert all(torch.equal(v, start[k]) for k, v in again.anchor.state_dict().items())
    older = PPO(None, lhopt_agent(), PPOConfig(anchor_coef=1.0))
    older.load_state_dict({k: v for k, v in state.items() if k != "initial_weights"})  # from before the record
    assert all(torch.equal(v, state["agent"][k]) for k, v in older.anchor.state_dict().items())


@pytest.mark.parametrize("kwargs, message", [({"advantage": "vtrace"}, "gae or loo"),
                                             ({"entropy_reduction": "max"}, "sum or mean"),
                                             ({"polyak": 1.0}, "polyak"), ({"target_kl": 0.0}, "target_kl"),
                                             ({"anchor_coef": -0.1}, "anchor_coef"),
                                             ({"anchor_coef": float("nan")}, "anchor_coef"),
                                             ({"anchor_coef": float("inf")}, "anchor_coef")])
def test_bad_ppo_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PPOConfig(**kwargs)


# --- the job ----------------------------------------------------------------------------------
SWEEP_SMOKE = ["debug=smoke", "task_family.kinds.mnist1d_conv.weight=0", "reward.reference=sweep",
               "reward.sweep_lrs=[1e-3,1e-2]", "reward.sweep_schedules=[constant]", "ppo.advantage=loo",
               "ppo.entropy_reduction=mean", "ppo.target_kl=0.05", "ppo.polyak=0.9", "workers=2", "envs=3",
               "task_family.reuse=1", "task_family.eval_start_share=0.25"]


def test_train_policy_starts_around_the_best_and_refuses_a_spread_it_cannot_use(run_cli, tmp_path):
    result = run_cli("train-policy", *SWEEP_SMOKE, "task_family.start_around_best=30", "ppo.iterations=1",
                     f"run_dir={tmp_path / 'run'}")
    assert result.exit_code == 0, result.output
    assert pd.read_csv(tmp_path / "run" / "meta_train.csv").reference_s.gt(0).all()
    for bad, message in [("task_family.start_around_best=0.5", "must be 0 (off) or a spread above 1"),
                         ("reward.reference=defaults", "needs reward.reference=sweep")]:
        refused = run_cli("train-policy", *SWEEP_SMOKE, "task_family.start_around_best=30", bad,
                          f"run_dir={tmp_path / 'refused'}")
        assert refused.exit_code != 0 and message in str(refused.exception or refused.output)
        assert not (tmp_path / "refused").exists()


def test_a_sweep_run_logs_its_reference_cost_and_scores_the_polyak_weights(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("train-policy", *SWEEP_SMOKE, "ppo.iterations=2", "validation.every=1", "validation.suite=smoke",
                     f"run_dir={run_dir}")
    assert result.exit_code == 0, result.output
    log = pd.read_csv(run_dir / "meta_train.csv")
    assert (log.reference_s > 0).all() and log.validation_speedup_polyak.notna().all()
    assert set(log.update_epochs) <= {1, 2, 3, 4}
    best = max(log.validation_speedup.max(), log.validation_speedup_polyak.max())
    _, meta = load_policy(run_dir / "best.pt")
    config = meta["config"]
    assert config["validation_speedup"] == pytest.approx(best) and config["weights"] in ("raw", "polyak")


@pytest.mark.parametrize("override, message", [("reward.reference=tuned", "reward.reference must be defaults or sweep"),
                                               ("reward.sweep_lrs=[0.0]", "positive"),
                                               ("reward.sweep_schedules=[warmup]", "unknown schedule"),
                                               ("ppo.advantage=vtrace", "gae or loo")])
def test_bad_reward_and_ppo_settings_are_one_line(run_cli, tmp_path, override, message):
    result = run_cli("train-policy", *SWEEP_SMOKE, override, f"run_dir={tmp_path / 'bad'}")
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert message in str(result.exception)
    assert not (tmp_path / "bad" / "meta_train.csv").exists()  # refused before anything ran


def test_a_bad_reward_reference_is_one_line_from_the_real_cli(tmp_path):
    proc = subprocess.run([str(LHOPT), "train-policy", *SWEEP_SMOKE, "reward.reference=tuned", f"run_dir={tmp_path}"],
                          capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["error: reward.reference must be defaults or sweep (got 'tuned')"]


# --- the privileged critic ----------------------------------------------------------------------
def test_the_privileged_inputs_name_the_task_and_carry_units():
    start, now = HParams(lr=1e-3), HParams(lr=4e-2, weight_decay=0.0)
    vector = privileged_vector("nqm", start, now, 500, 0.5, 10.0, 1.0, None)
    named = dict(zip(PRIVILEGED_NAMES, vector.tolist()))
    assert vector.shape == (len(PRIVILEGED_NAMES),) and np.isfinite(vector).all()
    assert named["kind_nqm"] == 1 and sum(v for k, v in named.items() if k.startswith("kind_")) == 1
    assert named["start_log_lr"] == pytest.approx(-3) and named["now_log_lr"] == pytest.approx(math.log10(4e-2))
    assert named["now_log_weight_decay"] == pytest.approx(-12)  # zero: the floor, not -inf
    assert named["log_total_steps"] == pytest.approx(math.log10(500))
    assert (named["log_initial_valid"], named["log_valid"], named["log_train"]) == pytest.approx((1.0, 0.0, 0.0))


def test_the_privileged_critic_reads_what_the_actor_never_sees(tmp_path):
    torch.manual_seed(0)
    agent = lhopt_agent(privileged_critic=True)
    obs, done = torch.randn(3, agent.obs_rms.mean.numel()), torch.zeros(3)
    a = torch.randn(3, len(PRIVILEGED_NAMES))
    b = a.clone()
    b[:, 0] += 3.0
    _, logprob_a, _, value_a, _ = agent.get_action_and_value(obs, agent.initial_state(3), done, torch.zeros(3, 7).long(), privileged=a)
    _, logprob_b, _, value_b, _ = agent.get_action_and_value(obs, agent.initial_state(3), done, torch.zeros(3, 7).long(), privileged=b)
    assert torch.equal(logprob_a, logprob_b) and not torch.allclose(value_a, value_b)
    save_policy(agent, tmp_path / "p.pt", {}, ObservationProtocol())
    loaded, _ = load_policy(tmp_path / "p.pt")  # the file says its critic is privileged
    assert loaded.privileged_dim == len(PRIVILEGED_NAMES)
    assert all(torch.equal(x, y) for x, y in zip(agent.state_dict().values(), loaded.state_dict().values()))


def test_a_privileged_critic_run_trains_and_resumes(run_cli, tmp_path):
    result = run_cli("train-policy", *SWEEP_SMOKE, "ppo.advantage=gae", "controller.privileged_critic=true",
                     "ppo.iterations=2", f"run_dir={tmp_path}")
    assert result.exit_code == 0, result.output
    assert np.isfinite(pd.read_csv(tmp_path / "meta_train.csv").explained_variance).all()
    result = run_cli("train-policy", *SWEEP_SMOKE, "ppo.advantage=gae", "controller.privileged_critic=true",
                     "ppo.iterations=3", "resume=true", f"run_dir={tmp_path}")
    assert result.exit_code == 0, result.output
    agent, _ = load_policy(tmp_path / "policy.pt")
    assert agent.privileged_dim == len(PRIVILEGED_NAMES)


def test_an_instance_whose_whole_sweep_diverged_earns_a_neutral_reward():
    sweep = ReferenceSweep(lrs=(1e3,), schedules=("constant",))  # lr 1000: every sweep run blows up
    env = VecLhoptEnv(TaskFamily(TINY_FAMILY), num_envs=2, seed=3, decisions=(3, 4), autoreset=False,
                      reference_sweep=sweep, randomize_start=False)
    info = _episode(env)
    _, references = sweep.curves(env.task, env.instance_seed)
    assert all(min(r) == r[0] and not np.isfinite(r[-1]) for r in references)  # never below its start
    # no sweep run finished: nothing to measure against, a neutral reward
    assert info["reward"].tolist() == [0.0, 0.0]
