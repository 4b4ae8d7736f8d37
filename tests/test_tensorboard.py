"""TensorBoard logging of meta-training (train-policy tensorboard=true) and of a Controller's decisions."""
from __future__ import annotations

import subprocess

import pytest
import torch

from conftest import LHOPT, lhopt_env


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_meta_training_logs_each_iteration_to_tensorboard_and_a_resume_continues_it(tmp_path):
    import pandas as pd

    run_dir = tmp_path / "run"
    command = [str(LHOPT), "train-policy", "debug=smoke", "tensorboard=true", "validation.every=0",
               "checkpoint_every=1", f"run_dir={run_dir}"]
    first = subprocess.run([*command, "ppo.iterations=2"], capture_output=True, text=True, env=lhopt_env(), timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"tensorboard --logdir {run_dir / 'tensorboard'}" in first.stdout
    again = subprocess.run([*command, "ppo.iterations=3", "resume=true"], capture_output=True, text=True,
                           env=lhopt_env(), timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    logged = scalars(run_dir / "tensorboard")
    log = pd.read_csv(run_dir / "meta_train.csv")
    rewards = logged["meta_train/mean_episode_reward"]
    assert [step for step, _ in rewards] == [1, 2, 3] == list(log.iteration)
    assert [value for _, value in rewards] == pytest.approx(list(log.mean_episode_reward), rel=1e-6)


def test_the_controller_writes_each_decision_to_tensorboard(tmp_path):
    from lhopt_cli import Controller

    net = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ctrl = Controller.from_pretrained().log_to(tmp_path / "tb")
    ctrl.attach(opt, total_steps=40, model=net)
    x, y = torch.randn(64, 4), torch.randn(64, 2)
    for step in range(40):
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        valid = loss.item() if step in ctrl.validation_steps else None  # the training set stands in
        if ctrl.step(loss, valid_loss=valid):
            opt.step()
        opt.zero_grad()
    ctrl.writer.flush()
    logged = scalars(tmp_path / "tb")
    assert [step for step, _ in logged["lhopt/lr"]] == [row["step"] for row in ctrl.history]
    assert [value for _, value in logged["lhopt/lr"]] == pytest.approx([row["lr"] for row in ctrl.history], rel=1e-6)
    assert {"lhopt/beta1", "lhopt/weight_decay", "lhopt/restart"} <= set(logged)
    # the lr the steps used: the policy's times the bundled protocol's linear decay at the decision
    decay = [1 - row["step"] / 40 for row in ctrl.history]
    assert [v for _, v in logged["lhopt/lr_used"]] == pytest.approx([row["lr"] * d for row, d in zip(ctrl.history, decay)],
                                                                     rel=1e-6)
