"""Schedules as files and ReplaySchedule: what a policy run used, played back on any AdamW."""
import json

import pytest
import torch

from lhopt_cli import Controller, ReplaySchedule, ScheduleFileError
from lhopt_cli.control.actions import EVAL_START, HEAD_NAMES
from lhopt_cli.loop.schedule_file import hparams_at, read_schedule
from lhopt_cli.tasks import build_task
from test_api import lively_agent

TASK = {"name": "mlp_digits", "hidden": [32], "activation": "tanh", "norm": "none", "batch_size": 16,
        "max_steps": None, "valid_size": None}
PROTOCOL = {"decisions": 20, "stats_every": 4, "eval_points": 10, "parameter_count": "all", "min_interval": 1,
            "lr_decay": "cosine"}


class NoRestarts:
    """A lively policy that never restarts: its schedule is all there is to replay."""

    def __init__(self, agent):
        self.agent = agent

    def initial_state(self, batch):
        return self.agent.initial_state(batch)

    def act(self, obs, state, done, greedy=False, generator=None, mask=None):
        action, state = self.agent.act(obs, state, done, greedy, generator, mask)
        action[:, HEAD_NAMES.index("restart")] = 0
        return action, state


def adamw(model, hp=EVAL_START):
    return torch.optim.AdamW(model.parameters(), lr=hp.lr, betas=(hp.beta1, hp.beta2), eps=hp.eps,
                             weight_decay=hp.weight_decay)


def group_values(opt) -> tuple:
    return tuple((g["lr"], *g["betas"], g["eps"], g["weight_decay"]) for g in opt.param_groups)


def controlled_run(task, tmp_path):
    """A Controller run in a plain loop: per step the optimizer's values at optimizer.step() and
    the loss; the schedule file written at its end."""
    ctrl = Controller(NoRestarts(lively_agent(3)), {"protocol": PROTOCOL}, guard=False)
    model = task.make_model(0)
    opt = adamw(model)
    ctrl.attach(opt, total_steps=task.total_steps, model=model)
    used, losses = [], []
    for step, batch in zip(range(task.total_steps), task.train_batches(0)):
        valid = task.valid_loss(model) if step in ctrl.validation_steps else None
        loss = task.loss(model, batch)
        loss.backward()
        assert ctrl.step(loss=loss.item(), valid_loss=valid)
        used.append(group_values(opt))
        losses.append(loss.item())
        opt.step()
        opt.zero_grad()
    path = ctrl.write_schedule(tmp_path / "schedule.json", task="mlp_digits")
    return ctrl, used, losses, path


def replayed_run(task, schedule, steps=None, stop_at=None, resume=None):
    model = task.make_model(0)
    opt = adamw(model)
    replay = ReplaySchedule(opt, schedule, task.total_steps)
    used, losses = [], []
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        replay.load_state_dict(resume["replay"])
        start = replay.step_index
    batches = task.train_batches(0)
    for step, batch in zip(range(task.total_steps), batches):
        if step < start:
            continue
        if step == stop_at:
            return {"model": model.state_dict(), "opt": opt.state_dict(), "replay": replay.state_dict()}, used, losses
        loss = task.loss(model, batch)
        loss.backward()
        replay.clip_gradients()
        used.append(group_values(opt))
        losses.append(loss.item())
        opt.step()
        opt.zero_grad()
        replay.step()
    return None, used, losses


def test_a_replay_on_the_run_it_came_from_sets_every_step_as_the_policy_did(tmp_path):
    task = build_task(TASK)
    ctrl, used, losses, path = controlled_run(task, tmp_path)
    lrs = {row["lr"] for row in ctrl.history}
    assert len(lrs) >= 3 and {row["restart"] for row in ctrl.history} == {"none"}  # a schedule worth replaying
    schedule = read_schedule(path)
    assert schedule["total_steps"] == task.total_steps and schedule["lr_decay"] == "cosine"
    assert len(schedule["points"]) == len(ctrl.history) + 1 and schedule["policy_sha256"] is None
    _, replayed, replayed_losses = replayed_run(task, path)
    assert replayed == used  # every step's lr (after the decay), betas, eps, weight decay
    assert replayed_losses == losses  # and its clipping: the same run, bit for bit


def test_a_replay_resumed_midway_equals_the_uninterrupted_one(tmp_path):
    task = build_task(TASK)
    *_, path = controlled_run(task, tmp_path)
    _, whole, whole_losses = replayed_run(task, path)
    saved, first, first_losses = replayed_run(task, path, stop_at=37)
    saved = torch.load(_save(saved, tmp_path), weights_only=True)  # through a file, as a user resumes
    _, rest, rest_losses = replayed_run(task, path, resume=saved)
    assert first + rest == whole and first_losses + rest_losses == whole_losses


def _save(state, tmp_path):
    torch.save(state, tmp_path / "resume.pt")
    return tmp_path / "resume.pt"


def test_param_groups_keep_their_ratios_and_a_longer_run_reads_the_file_by_progress(tmp_path):
    task = build_task(TASK)
    *_, path = controlled_run(task, tmp_path)
    schedule = read_schedule(path)
    model = task.make_model(0)
    weights = [p for p in model.parameters() if p.dim() > 1]
    biases = [p for p in model.parameters() if p.dim() == 1]
    opt = torch.optim.AdamW([{"params": weights, "lr": 1e-3, "weight_decay": 0.01},
                             {"params": biases, "lr": 1e-4, "weight_decay": 0.0}])
    longer = 3 * task.total_steps
    replay = ReplaySchedule(opt, path, longer)
    for step in range(longer):
        expected = hparams_at(schedule, step, longer)
        first, second = opt.param_groups
        assert first["lr"] == pytest.approx(expected.lr) and second["lr"] == pytest.approx(0.1 * expected.lr)
        assert second["weight_decay"] == 0.0 and first["betas"] == (expected.beta1, expected.beta2)
        if step % 3 == 0:  # progress k / T on the original is 3k / 3T here
            assert hparams_at(schedule, step // 3, task.total_steps) == expected
        replay.step()
    with pytest.raises(RuntimeError, match="more than total_steps"):
        replay.step()


@pytest.mark.parametrize("edit, message", [
    (lambda s: {**s, "format": "x"}, "not an lhopt schedule"),
    (lambda s: {**s, "total_steps": 0}, "total_steps must be a positive integer"),
    (lambda s: {**s, "lr_decay": "warp"}, "unknown lr_decay 'warp'"),
    (lambda s: {**s, "points": []}, "points must be a non-empty list"),
    (lambda s: {**s, "points": s["points"][1:]}, "points[0].progress"),
    (lambda s: {**s, "points": [s["points"][0], {**s["points"][0], "progress": 0.5}, {**s["points"][0], "progress": 0.2}]},
     "points[2].progress 0.2 out of order"),
    (lambda s: {**s, "points": [{**s["points"][0], "beta2": 1.5}]}, "points[0].beta2 = 1.5 is out of range"),
    (lambda s: {**s, "points": [{**s["points"][0], "lr": "fast"}]}, "not a finite number"),
])
def test_a_bad_schedule_is_one_line(tmp_path, edit, message):
    task = build_task({**TASK, "max_steps": 30})
    *_, path = controlled_run(task, tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(ScheduleFileError) as err:
        ReplaySchedule(torch.optim.AdamW(task.make_model(0).parameters()), bad, 10)
    assert str(err.value).startswith(f"schedule {bad}: ") and message in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_unreadable_and_non_strict_files_are_one_line(tmp_path):
    opt = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters())
    with pytest.raises(ScheduleFileError, match="no such file"):
        ReplaySchedule(opt, tmp_path / "none.json", 10)
    (tmp_path / "nan.json").write_text('{"format": "lhopt-schedule", "version": 1, "total_steps": NaN}')
    with pytest.raises(ScheduleFileError, match="not strict JSON"):
        ReplaySchedule(opt, tmp_path / "nan.json", 10)
    with pytest.raises(ValueError, match="total_steps must be a positive integer"):
        ReplaySchedule(opt, {"format": "lhopt-schedule"}, 0)


def test_evaluate_replays_a_schedule_file_as_a_method_beside_the_policy(run_cli, smoke_policy, tmp_path):
    import pandas as pd

    first = run_cli("evaluate", "debug=smoke", f"policy={smoke_policy}", "tasks=[mlp_mnist]", "seeds=[0]",
                    "extra_baselines=[]", f"run_dir={tmp_path / 'a'}")
    assert first.exit_code == 0, first.output
    schedule = tmp_path / "a" / "schedule_mlp_mnist_s0.json"
    # replayed on the run it came from: the policy's own hyperparameters, the same curve
    again = run_cli("evaluate", "debug=smoke", f"policy={smoke_policy}", "tasks=[mlp_mnist]", "seeds=[0]",
                    "extra_baselines=[]", f"replay={schedule}", f"run_dir={tmp_path / 'a'}")
    assert again.exit_code == 0, again.output
    summary = pd.read_csv(tmp_path / "a" / "summary.csv").set_index("method")
    assert summary.loc["replay", "speedup"] == pytest.approx(summary.loc["lhopt", "speedup"])
    assert summary.loc["replay", "final_valid_loss"] == pytest.approx(summary.loc["lhopt", "final_valid_loss"], rel=1e-4)
    # and on another task, stretched to its length
    other = run_cli("evaluate", "debug=smoke", f"policy={smoke_policy}", "tasks=[nqm]", "seeds=[0,1]",
                    "extra_baselines=[]", f"replay={schedule}", f"run_dir={tmp_path / 'b'}")
    assert other.exit_code == 0, other.output
    rows = pd.read_csv(tmp_path / "b" / "summary.csv")
    assert set(rows[rows.method == "replay"].seed) == {0, 1}


def test_evaluate_refuses_a_bad_replay_file_in_one_line_before_any_folder(tmp_path):
    import subprocess

    from conftest import LHOPT, lhopt_env

    (tmp_path / "bad.json").write_text("{}")
    proc = subprocess.run([str(LHOPT), "evaluate", "debug=smoke", "tasks=[nqm]", f"replay={tmp_path / 'bad.json'}",
                           f"run_dir={tmp_path / 'r'}"], capture_output=True, text=True, env=lhopt_env(), timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f'error: replay={tmp_path / "bad.json"}: not an lhopt schedule (expected "format": "lhopt-schedule")']
    assert not (tmp_path / "r").exists()


def test_replay_takes_any_integer_length_and_refuses_adams_coupled_weight_decay(tmp_path):
    import numpy as np

    from lhopt_cli import ReplaySchedule
    from lhopt_cli.loop.schedule_file import build_schedule, write_schedule
    from lhopt_cli.control.actions import EVAL_START

    path = write_schedule(tmp_path / "s.json", build_schedule(EVAL_START, [], 10, "constant", "t", 0, ""))
    net = torch.nn.Linear(3, 1)
    replay = ReplaySchedule(torch.optim.AdamW(net.parameters()), path, np.int64(5))
    assert replay.total_steps == 5 and type(replay.total_steps) is int
    with pytest.raises(ValueError, match=r"positive integer \(got 2.0\)"):
        ReplaySchedule(torch.optim.AdamW(net.parameters()), path, 2.0)
    with pytest.raises(TypeError, match="L2 term on the gradient"):
        ReplaySchedule(torch.optim.Adam(net.parameters(), weight_decay=0.01), path, 5)
