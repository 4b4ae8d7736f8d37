"""The kinds a battery on states, schedules, run folders and reads found, each as a kind: nothing
applied before it is checked whole, nothing written over what is not a file or through a planted
link, no read without a bound, no folder a failed command leaves in the way."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import LHOPT, lhopt_env
from lhopt_cli import Controller, LhoptAdamW
from lhopt_cli.inner.optim import HParams
from lhopt_cli.loop.replay import ReplaySchedule
from lhopt_cli.loop.schedule_file import build_schedule


def lhopt(*args, timeout=300):
    return subprocess.run([str(LHOPT), *args], capture_output=True, text=True, env=lhopt_env(), timeout=timeout)


def one_line(proc) -> str:
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


def net(widths=(4, 8, 3)):
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1])


def trained_optimizer(model, steps=5):
    opt = LhoptAdamW(model.parameters(), total_steps=40, model=model)
    for _ in range(steps):
        loss = model(torch.randn(16, model[0].in_features)).pow(2).mean()
        loss.backward()
        opt.step(loss=loss.detach())
        opt.zero_grad()
    return opt


SCHEDULE = build_schedule(HParams(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, clip=0.8), [], 10,
                          "constant", "toy", 0, None)


def test_a_replay_state_of_other_groups_or_values_changes_nothing():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    one = ReplaySchedule(torch.optim.AdamW([a], lr=1e-3), SCHEDULE, 10)
    one.step()
    optimizer = torch.optim.AdamW([{"params": [a]}, {"params": [b], "lr": 2e-3}], lr=1e-3)
    two = ReplaySchedule(optimizer, SCHEDULE, 10)
    before = (two.step_index, [g["lr"] for g in optimizer.param_groups])
    with pytest.raises(ValueError, match="1 param groups saved, the optimizer has 2; nothing was changed"):
        two.load_state_dict(one.state_dict())
    state = two.state_dict()
    state["group_scales"][0]["lr"] = float("nan")
    with pytest.raises(ValueError, match="nothing was changed"):
        two.load_state_dict(state)
    assert (two.step_index, [g["lr"] for g in optimizer.param_groups]) == before


def test_lhopt_adamw_refuses_another_networks_state_before_anything_changes():
    torch.manual_seed(0)
    saved = trained_optimizer(net((4, 8, 3))).state_dict()
    other = LhoptAdamW(net((4, 16, 3)).parameters(), total_steps=40)  # as many tensors, other widths
    with pytest.raises(ValueError, match="another network's or a damaged state; nothing was changed"):
        other.load_state_dict(saved)
    deeper_model = net((4, 8, 8, 3))
    deeper = LhoptAdamW(deeper_model.parameters(), total_steps=40, model=deeper_model)
    with pytest.raises(ValueError):
        deeper.load_state_dict(saved)
    assert deeper.controller.step_index == 0 and deeper.param_groups[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize("key, value", [("lr", 1e300), ("one_minus_beta1", 1e6)])
def test_a_controller_state_whose_group_ratios_no_run_can_use_is_refused(key, value):
    torch.manual_seed(0)
    model = net()
    state = trained_optimizer(model).state_dict()
    state["lhopt"]["group_scales"][0][key] = value
    fresh = LhoptAdamW(model.parameters(), total_steps=40, model=model)
    with pytest.raises(ValueError, match="not a whole Controller state"):
        fresh.load_state_dict(state)
    assert fresh.controller.step_index == 0


def test_a_controller_state_whose_guard_point_holds_another_networks_weights_is_refused():
    torch.manual_seed(0)
    model = net()
    state = trained_optimizer(model).state_dict()
    weight = state["lhopt"]["guard"]["point"]["state"]["model"]["0.weight"]
    state["lhopt"]["guard"]["point"]["state"]["model"]["0.weight"] = torch.zeros(weight.shape[0] + 1, weight.shape[1])
    fresh = LhoptAdamW(model.parameters(), total_steps=40, model=model)
    with pytest.raises(ValueError, match="guard's point holds another network's weights"):
        fresh.load_state_dict(state)


def test_a_schedule_is_never_written_over_what_is_not_a_file(tmp_path):
    model = net()
    opt = trained_optimizer(model)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(IsADirectoryError, match="not a file"):
        opt.controller.write_schedule(fifo)
    assert fifo.is_fifo()


@pytest.mark.parametrize("folder", ["tensorboard", "validation_grid", "passes"])
def test_a_link_planted_at_a_folder_train_policy_writes_into_is_refused(tmp_path, folder):
    run_dir, elsewhere = tmp_path / "r", tmp_path / "elsewhere"
    run_dir.mkdir()
    elsewhere.mkdir()
    (run_dir / folder).symlink_to(elsewhere, target_is_directory=True)
    line = one_line(lhopt("train-policy", "debug=smoke", "tensorboard=true", "validation.keep=true", f"run_dir={run_dir}"))
    assert f"a link stands at the run folder's {folder}" in line, line
    assert not any(elsewhere.iterdir()) and sorted(p.name for p in run_dir.iterdir()) == [folder]


def test_a_checkpoint_that_is_a_device_is_never_read(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").symlink_to("/dev/zero")
    line = one_line(lhopt("train-policy", "debug=smoke", "resume=true", f"run_dir={run_dir}", timeout=120))
    assert "character device, not a file" in line, line


def test_a_policy_file_whose_hidden_size_is_not_its_weights_is_refused_before_the_network_is_built(smoke_policy, tmp_path):
    from lhopt_cli.control.checkpoint import PolicyFileError, load_policy

    blob = torch.load(smoke_policy, weights_only=True)
    blob["hidden"] = 4000
    path = tmp_path / "wide.pt"
    torch.save(blob, path)
    with pytest.raises(PolicyFileError, match="its hidden size 4000 is not its weights'"):
        load_policy(path)


@pytest.mark.parametrize("scale", ["[100,0.01]", "1e300", "[0,1]"])
def test_train_policy_refuses_a_param_scale_no_run_can_use_and_leaves_no_folder(tmp_path, scale):
    line = one_line(lhopt("train-policy", "debug=smoke", f"task_family.param_scale={scale}", f"run_dir={tmp_path / 'r'}"))
    assert "task_family.param_scale must be null, a positive number or a [low, high] range" in line, line
    assert not (tmp_path / "r").exists()


def test_a_meta_training_that_fails_before_its_first_iteration_leaves_no_folder_and_the_rerun_starts(
        tmp_path, monkeypatch, capsys):
    from lhopt_cli.commands.cli import main
    from lhopt_cli.control import ppo

    def broken(self, *args, **kwargs):
        raise RuntimeError("the first rollout failed")

    run_dir = tmp_path / "r"
    monkeypatch.setattr(ppo.PPO, "train", broken)
    monkeypatch.setattr(sys, "argv", ["lhopt", "train-policy", "debug=smoke", f"run_dir={run_dir}"])
    with pytest.raises(RuntimeError, match="the first rollout failed"):
        main()
    assert not run_dir.exists()
    run_dir.mkdir()  # a folder the user made: the failed run's header-only log does not hold it
    with pytest.raises(RuntimeError):
        main()
    monkeypatch.undo()
    assert lhopt("train-policy", "debug=smoke", f"run_dir={run_dir}").returncode == 0


def test_a_folder_where_a_command_writes_a_file_is_refused_before_any_work(tmp_path):
    run_dir = tmp_path / "g"
    (run_dir / "grid_table.csv").mkdir(parents=True)
    line = one_line(lhopt("baseline-grid", "debug=smoke", "task=nqm", f"run_dir={run_dir}"))
    assert "grid_table.csv: a folder (or something that is not a file) stands where this command writes" in line
    assert sorted(p.name for p in run_dir.iterdir()) == ["grid_table.csv"]  # no run, no log, no lock left


def test_replay_and_adamw_states_whose_values_no_run_can_use_are_refused():
    weight = torch.nn.Parameter(torch.ones(2))
    replay = ReplaySchedule(torch.optim.AdamW([weight], lr=1e-3), SCHEDULE, 10)
    state = replay.state_dict()
    state["group_scales"][0]["one_minus_beta1"] = 1e6
    with pytest.raises(ValueError, match="its param group 0's beta1 -99999 is not one AdamW can run with; nothing"):
        replay.load_state_dict(state)
    torch.manual_seed(0)
    model = net()
    saved = trained_optimizer(model).state_dict()
    first = next(iter(saved["state"]))
    saved["state"][first]["exp_avg_sq"] = torch.full_like(saved["state"][first]["exp_avg_sq"], -1.0)
    fresh = LhoptAdamW(model.parameters(), total_steps=40, model=model)
    with pytest.raises(ValueError, match="negative"):
        fresh.load_state_dict(saved)
    saved = trained_optimizer(model).state_dict()
    saved["lhopt"]["clipper"]["rolling_max"] = float("nan")
    with pytest.raises(ValueError, match="clipping state"):
        fresh.load_state_dict(saved)
    assert fresh.controller.step_index == 0
