"""The lr decay of a policy's observation protocol: the engine, the Controller, policy files and
train-policy's warm start apply and carry it alike."""
import math

import pytest
import torch

from lhopt_cli.loop.controller import Controller
from lhopt_cli.config.compose import compose
from lhopt_cli.control.checkpoint import load_policy, policy_protocol
from lhopt_cli.control.protocol import ObservationProtocol, ProtocolError
from lhopt_cli.inner import HParams, Hook, ScheduleHook
from lhopt_cli.inner.batched import train_batched
from lhopt_cli.inner.schedules import lr_multiplier
from lhopt_cli.tasks import build_task


def test_the_engines_decay_is_the_baseline_schedule_on_the_policys_lr():
    task = build_task(compose("baseline_grid", ["task=nqm", "task.dim=30", "task.max_steps=60", "task.eval_points=6"]).task)
    hp = HParams(lr=3e-3)
    decayed = train_batched(task, [0, 1], [Hook(), Hook()], [hp, hp], lr_decay="cosine")
    scheduled = train_batched(task, [0, 1], [ScheduleHook("cosine", hp), ScheduleHook("cosine", hp)], [hp, hp])
    plain = train_batched(task, [0], [Hook()], [hp])
    for ours, theirs in zip(decayed, scheduled):
        assert [r["step"] for r in ours.curve] == [r["step"] for r in theirs.curve]
        for a, b in zip(ours.curve, theirs.curve):
            assert a["valid_loss"] == pytest.approx(b["valid_loss"], rel=1e-6)
            assert a["lr"] == pytest.approx(b["lr"], rel=1e-12)  # the curve shows the lr actually taken
    assert decayed[0].curve[-1]["lr"] < 0.01 * hp.lr and plain[0].curve[-1]["lr"] == hp.lr
    assert decayed[0].curve[-1]["valid_loss"] != plain[0].curve[-1]["valid_loss"]
    with pytest.raises(ValueError, match="unknown lr_decay 'warm'"):
        train_batched(task, [0], lr_decay="warm")


def test_the_protocols_decay_is_checked_and_files_without_it_have_none():
    assert ObservationProtocol.from_dict({"decisions": 64, "stats_every": 4, "eval_points": 25,
                                          "parameter_count": "all"}).lr_decay == "constant"
    protocol = ObservationProtocol(lr_decay="linear")
    assert protocol.lr_factor(25, 100) == 0.75 and ObservationProtocol().lr_factor(99, 100) == 1.0
    with pytest.raises(ProtocolError, match="lr_decay must be one of constant, multistep"):
        ObservationProtocol(lr_decay="cosine_to_zero")
    with pytest.raises(ProtocolError, match="lr_decay=linear contradicts the policy's observation protocol"):
        ObservationProtocol().check("evaluate protocol", lr_decay="linear")


def test_the_controller_decays_the_users_lr_at_every_step(policy_with_protocol):
    ctrl = Controller.from_checkpoint(policy_with_protocol(lr_decay="cosine"))
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW([{"params": [model.weight]}, {"params": [model.bias], "lr": 2e-3}], lr=1e-3)
    total = 40
    ctrl.attach(opt, total_steps=total, model=model)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for step in range(total):
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        if ctrl.step(loss=loss.item()):
            factor = lr_multiplier("cosine", step, total)
            assert opt.param_groups[0]["lr"] == pytest.approx(ctrl.hparams.lr * factor, rel=1e-12)
            assert opt.param_groups[1]["lr"] == pytest.approx(2 * ctrl.hparams.lr * factor, rel=1e-12)
            opt.step()
        opt.zero_grad()
    assert opt.param_groups[0]["lr"] < 0.01 * ctrl.hparams.lr  # annealed by the end
    assert math.isfinite(loss.item())


def test_a_warm_start_may_change_the_decay_and_the_file_carries_the_new_one(smoke_policy, run_cli, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("train-policy", "debug=smoke", "task_family.kinds.mnist1d_conv.weight=0", "ppo.iterations=1",
                     f"init_policy={smoke_policy}", "controller.lr_decay=cosine", f"run_dir={run_dir}")
    assert result.exit_code == 0, result.output
    assert "init_policy ran under lr_decay=constant; this run trains it under lr_decay=cosine" in result.output
    _, meta = load_policy(run_dir / "policy.pt")
    assert policy_protocol(meta).lr_decay == "cosine"
    assert policy_protocol(load_policy(smoke_policy)[1]).lr_decay == "constant"
    bad = run_cli("train-policy", "debug=smoke", "controller.lr_decay=warm", f"run_dir={tmp_path / 'bad'}")
    assert bad.exit_code != 0 and "controller: lr_decay must be one of" in str(bad.exception)
    assert not (tmp_path / "bad").exists()  # refused before the run folder is kept


def test_a_run_from_before_the_decay_existed_reads_as_constant(tmp_path):
    from omegaconf import OmegaConf

    from lhopt_cli.commands.train_policy import training_protocol

    cfg = compose("train_policy", ["debug=smoke", f"run_dir={tmp_path}"])
    older = OmegaConf.to_container(cfg, resolve=True)
    del older["controller"]["lr_decay"]  # a run folder's config.yaml written before the key
    assert training_protocol(OmegaConf.create(older).controller).lr_decay == "constant"
    assert training_protocol(OmegaConf.create(older).controller) == training_protocol(cfg.controller)
