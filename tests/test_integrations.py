"""The Controller inside PyTorch Lightning and Hugging Face transformers' Trainer (the extras
lhopt-cli[lightning] and lhopt-cli[hf]): the same decisions and weights as a plain loop."""
import logging
import warnings

import pytest
import torch
from torch import nn

from lhopt_cli import Controller
from test_api import Scripted, lively_agent, user_problem

STEPS = 60


def plain_run(policy, agent=None, steps=STEPS):
    """The README's plain loop on user_problem: batches of 16 in order, AdamW lr 1e-3."""
    net, x, y = user_problem()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ctrl = Controller.from_checkpoint(policy)
    if agent is not None:
        ctrl.agent = agent
    ctrl.attach(opt, total_steps=steps, model=net)
    for step in range(steps):
        idx = torch.arange(step * 16, step * 16 + 16) % 256
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        loss.backward()
        if ctrl.step(loss=loss.item()):
            opt.step()
        opt.zero_grad()
    return ctrl, net


# --- PyTorch Lightning -----------------------------------------------------------------------
import lightning.pytorch as pl  # noqa: E402  (the lightning extra; make test installs it)


class Module(pl.LightningModule):
    def __init__(self, net, scheduler=False):
        super().__init__()
        self.net, self.scheduler = net, scheduler

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1e-3)
        if self.scheduler:
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 10)}
        return opt


def lightning_run(callback, steps=STEPS, scheduler=False, **trainer_kwargs):
    from lightning.pytorch import Trainer

    net, x, y = user_problem()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=False)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    trainer = Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      callbacks=callback if isinstance(callback, list) else [callback], **trainer_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(net, scheduler), loader)
    return net


def test_lightning_makes_the_plain_loops_decisions_and_weights(policy_with_protocol):
    from lhopt_cli.integrations.lightning import LhoptCallback

    policy = policy_with_protocol(decisions=8)
    expected, plain_net = plain_run(policy, lively_agent(3))
    callback = LhoptCallback(policy)
    callback.controller.agent = lively_agent(3)
    net = lightning_run(callback)
    ctrl = callback.controller
    assert ctrl.step_index == STEPS and len(ctrl.history) == 8
    assert len({row["lr"] for row in ctrl.history}) > 1  # the policy did move the learning rate
    assert ctrl.history == expected.history
    for ours, theirs in zip(net.parameters(), plain_net.parameters()):
        torch.testing.assert_close(ours, theirs)


def test_lightning_skips_the_update_after_a_restore(policy_with_protocol):
    from lhopt_cli.integrations.lightning import LhoptCallback

    policy = policy_with_protocol(decisions=4)
    expected, plain_net = plain_run(policy, Scripted(Controller.from_checkpoint(policy).agent))
    callback = LhoptCallback(policy)
    callback.controller.agent = Scripted(callback.controller.agent)  # save at decision 2, load at 4
    net = lightning_run(callback)
    assert [row["restart"] for row in callback.controller.history] == ["none", "save", "none", "load"]
    assert callback.bridge.gate.skipped == 1
    for ours, theirs in zip(net.parameters(), plain_net.parameters()):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("setting, message", [
    ({"scheduler": True}, "without an LR scheduler"),
    ({"gradient_clip_val": 1.0}, "clips the gradient itself"),
])
def test_lightning_settings_that_fight_the_controller_are_refused(policy_with_protocol, setting, message):
    from lhopt_cli.integrations.lightning import LhoptCallback

    with pytest.raises(ValueError, match=message):
        lightning_run(LhoptCallback(policy_with_protocol(decisions=8)), **setting)


# --- Hugging Face transformers ---------------------------------------------------------------


class Classifier(nn.Module):
    """A model as the Trainer expects it: keyword inputs, a dict with the loss."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, labels):
        return {"loss": nn.functional.cross_entropy(self.net(x), labels)}


class Rows(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def hf_run(tmp_path, callback, steps=STEPS, **arg_overrides):
    from transformers import Trainer, TrainingArguments

    net, x, y = user_problem()
    settings = {"output_dir": str(tmp_path), "max_steps": steps, "per_device_train_batch_size": 16,
                "learning_rate": 1e-3, "weight_decay": 0.01, "lr_scheduler_type": "linear", "max_grad_norm": 0.0,
                "report_to": [], "save_strategy": "no", "logging_strategy": "no", "use_cpu": True,
                "dataloader_num_workers": 0, "disable_tqdm": True, "seed": 0, **arg_overrides}
    callbacks = callback if isinstance(callback, list) else [callback]
    trainer = Trainer(model=Classifier(net), args=TrainingArguments(**settings), train_dataset=Rows(x, y),
                      callbacks=callbacks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    return trainer, net


def hf_learning_rates():
    """A TrainerCallback recording the lr each update ran with (read right after optimizer.step,
    before the scheduler's step) in its `used` list."""
    from transformers import TrainerCallback

    class LearningRates(TrainerCallback):
        def __init__(self):
            self.used = []

        def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            self.used.append(optimizer.param_groups[0]["lr"])

    return LearningRates()


def test_the_hf_trainer_follows_the_controller_not_its_scheduler(policy_with_protocol, tmp_path):
    from lhopt_cli.integrations.hf import LhoptTrainerCallback

    callback, rates = LhoptTrainerCallback(policy_with_protocol(decisions=8)), hf_learning_rates()
    callback.controller.agent = lively_agent(3)
    hf_run(tmp_path, [callback, rates])
    ctrl = callback.controller
    assert ctrl.step_index == STEPS and len(ctrl.history) == 8
    assert len({row["lr"] for row in ctrl.history}) > 1
    # the linear schedule decays the lr toward 0; every update ran with the controller's instead
    decided = {row["step"]: row["lr"] for row in ctrl.history}
    expected, lr = [], 1e-3
    for step in range(STEPS):
        lr = decided.get(step, lr)
        expected.append(lr)
    assert rates.used == pytest.approx(expected)
    assert ctrl.tracker.history["grad_norm"] and all(v > 0 for v in ctrl.tracker.history["grad_norm"])


def test_the_hf_trainer_skips_the_update_after_a_restore(policy_with_protocol, tmp_path):
    from lhopt_cli.integrations.hf import LhoptTrainerCallback

    policy = policy_with_protocol(decisions=4)
    callback = LhoptTrainerCallback(policy)
    callback.controller.agent = Scripted(callback.controller.agent)  # save at decision 2, load at 4
    hf_run(tmp_path, callback)
    assert [row["restart"] for row in callback.controller.history] == ["none", "save", "none", "load"]
    assert callback.bridge.gate.skipped == 1


@pytest.mark.parametrize("setting, message", [
    ({"max_grad_norm": 1.0}, "max_grad_norm=0"),
    ({"gradient_accumulation_steps": 2, "max_grad_norm": 1.0}, "max_grad_norm=0"),
])
def test_hf_settings_that_fight_the_controller_are_refused(policy_with_protocol, tmp_path, setting, message):
    from lhopt_cli.integrations.hf import LhoptTrainerCallback

    with pytest.raises(ValueError, match=message):
        hf_run(tmp_path, LhoptTrainerCallback(policy_with_protocol(decisions=8)), **setting)


def test_the_hf_trainer_with_warmup_starts_from_the_base_lr(policy_with_protocol, tmp_path):
    from lhopt_cli.integrations.hf import LhoptTrainerCallback

    callback = LhoptTrainerCallback(policy_with_protocol(decisions=8))
    start = [p.detach().clone() for p in user_problem()[0].parameters()]
    _, net = hf_run(tmp_path, callback, warmup_steps=10)
    assert all(row["lr"] > 0 for row in callback.controller.history)
    assert callback.controller.history[0]["lr"] == pytest.approx(1e-3, rel=0.5)
    assert any(not torch.equal(a, b) for a, b in zip(start, net.parameters()))  # it trained


def test_the_hf_trainer_resumed_from_its_checkpoint_decides_as_the_uninterrupted_run(policy_with_protocol, tmp_path):
    from transformers import Trainer, TrainingArguments

    from lhopt_cli.integrations.hf import CONTROLLER_FILE, LhoptTrainerCallback

    policy = policy_with_protocol(decisions=8)
    whole = LhoptTrainerCallback(policy)
    whole.controller.agent = lively_agent(3)
    _, whole_net = hf_run(tmp_path, whole, save_strategy="steps", save_steps=30)  # saving changes nothing
    assert (tmp_path / "checkpoint-30" / CONTROLLER_FILE).is_file()

    def resume(callback, folder):
        net, x, y = user_problem()
        args = TrainingArguments(output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=16,
                                 learning_rate=1e-3, weight_decay=0.01, lr_scheduler_type="linear", max_grad_norm=0.0,
                                 report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
                                 dataloader_num_workers=0, disable_tqdm=True, seed=0)
        trainer = Trainer(model=Classifier(net), args=args, train_dataset=Rows(x, y), callbacks=[callback])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train(resume_from_checkpoint=str(folder))
        return net

    again = LhoptTrainerCallback(policy)
    again.controller.agent = lively_agent(3)
    net = resume(again, tmp_path / "checkpoint-30")
    assert again.controller.step_index == STEPS and again.controller.history == whole.controller.history
    for ours, theirs in zip(net.parameters(), whole_net.parameters()):
        torch.testing.assert_close(ours, theirs)
    # a controller file cut short: refused naming the file
    saved = tmp_path / "checkpoint-30" / CONTROLLER_FILE
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"{CONTROLLER_FILE}: damaged or not a controller state"):
        resume(LhoptTrainerCallback(policy), tmp_path / "checkpoint-30")
    # a checkpoint saved without the callback: refused in one line saying what to do
    saved.unlink()
    with pytest.raises(ValueError, match="cannot resume from step 30: no lhopt_controller.pt in .* start the run anew"):
        resume(LhoptTrainerCallback(policy), tmp_path / "checkpoint-30")


def test_lightning_with_accumulation_gives_the_controller_the_true_loss(policy_with_protocol):
    from lhopt_cli.integrations.lightning import LhoptCallback

    policy = policy_with_protocol(decisions=8)
    net, x, y = user_problem()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    expected = Controller.from_checkpoint(policy)
    expected.agent = lively_agent(3)
    expected.attach(opt, total_steps=30, model=net)
    for step in range(30):  # the plain loop: two micro-batches of 16 per update, their mean loss
        losses = []
        for micro in range(2):
            idx = torch.arange((2 * step + micro) * 16, (2 * step + micro) * 16 + 16) % 256
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            (loss / 2).backward()
            losses.append(loss.item())
        if expected.step(loss=sum(losses) / 2):
            opt.step()
        opt.zero_grad()
    callback = LhoptCallback(policy)
    callback.controller.agent = lively_agent(3)
    lightning_net = lightning_run(callback, steps=30, accumulate_grad_batches=2)
    assert callback.controller.history == expected.history
    for ours, theirs in zip(lightning_net.parameters(), net.parameters()):
        torch.testing.assert_close(ours, theirs)


def test_lightning_resumed_from_its_checkpoint_decides_as_the_uninterrupted_run(policy_with_protocol, tmp_path):
    from lightning.pytorch import Callback, Trainer

    from lhopt_cli.integrations.lightning import LhoptCallback

    policy = policy_with_protocol(decisions=8)
    whole = LhoptCallback(policy)
    whole.controller.agent = lively_agent(3)
    whole_net = lightning_run(whole, steps=64)

    class CutAt32(Callback):  # the end of the 2nd epoch (16 batches each): the data order resumes exactly
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 32:
                trainer.save_checkpoint(tmp_path / "cut.ckpt")
                trainer.should_stop = True

    first = LhoptCallback(policy)
    first.controller.agent = lively_agent(3)
    lightning_run([first, CutAt32()], steps=64)
    assert first.controller.step_index == 32
    second = LhoptCallback(policy)
    second.controller.agent = lively_agent(3)
    net, x, y = user_problem()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=False)
    trainer = Trainer(max_steps=64, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[second])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(net), loader, ckpt_path=str(tmp_path / "cut.ckpt"))
    assert second.controller.step_index == 64
    assert second.controller.history == whole.controller.history
    for ours, theirs in zip(net.parameters(), whole_net.parameters()):
        torch.testing.assert_close(ours, theirs)


# --- a schedule file replayed in both frameworks ------------------------------------------------
def replayed_plain(path, steps=STEPS):
    """The plain loop of plain_run with the schedule replayed instead of the Controller."""
    from lhopt_cli import ReplaySchedule

    net, x, y = user_problem()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    replay = ReplaySchedule(opt, path, steps)
    for step in range(steps):
        idx = torch.arange(step * 16, step * 16 + 16) % 256
        nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        replay.clip_gradients()
        opt.step()
        opt.zero_grad()
        replay.step()
    return net


def test_lightning_and_the_hf_trainer_replay_a_schedule_file(policy_with_protocol, tmp_path):
    from transformers import TrainerCallback

    from lhopt_cli.integrations.hf import ReplayTrainerCallback
    from lhopt_cli.integrations.lightning import ReplayCallback
    from lhopt_cli.loop.schedule_file import hparams_at, read_schedule
    from test_replay import NoRestarts

    ctrl, _ = plain_run(policy_with_protocol(decisions=8), NoRestarts(lively_agent(3)))
    path = ctrl.write_schedule(tmp_path / "schedule.json")
    assert len({row["lr"] for row in ctrl.history}) > 1
    plain = replayed_plain(path)
    net = lightning_run(ReplayCallback(path))  # the same batches in the same order: the same weights
    for ours, theirs in zip(net.parameters(), plain.parameters()):
        torch.testing.assert_close(ours, theirs)

    class Used(TrainerCallback):
        def __init__(self):
            self.lrs = []

        def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            self.lrs.append(optimizer.param_groups[0]["lr"])

    used = Used()
    hf_run(tmp_path / "hf", [ReplayTrainerCallback(path), used])  # over the Trainer's linear decay
    schedule = read_schedule(path)
    assert used.lrs == pytest.approx([hparams_at(schedule, k, STEPS).lr for k in range(STEPS)])


def test_the_hf_trainer_logs_the_learning_rate_each_update_used(policy_with_protocol, tmp_path):
    from lhopt_cli.loop.controller import ControllerMisuseWarning
    from lhopt_cli.integrations.hf import LhoptTrainerCallback

    callback, rates = LhoptTrainerCallback(policy_with_protocol(decisions=8, lr_decay="linear")), hf_learning_rates()
    callback.controller.agent = lively_agent(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, _ = hf_run(tmp_path, [callback, rates], logging_strategy="steps", logging_steps=1)
    logged = [row["learning_rate"] for row in trainer.state.log_history if "learning_rate" in row]
    # the Trainer's linear schedule would log 1e-3 falling to 0; it logs what the updates used
    assert len(logged) == STEPS and logged == pytest.approx(rates.used)
    assert len(set(round(v, 12) for v in rates.used)) > STEPS // 2  # the decay moved it at every step
    # the Trainer's own scheduler is not taken for a loop that fights the controller
    assert not [w for w in caught if issubclass(w.category, ControllerMisuseWarning) and "learning rate" in str(w.message)]


def test_lightning_with_a_monitor_the_validation_never_logs_is_refused(policy_with_protocol):
    from lightning.pytorch import Trainer

    from lhopt_cli.integrations.lightning import LhoptCallback

    class Validated(Module):
        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    net, x, y = user_problem()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    trainer = Trainer(max_steps=STEPS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, val_check_interval=8,
                      num_sanity_val_steps=0, callbacks=[LhoptCallback(policy_with_protocol(decisions=8), monitor="nope")])
    with warnings.catch_warnings(), pytest.raises(ValueError, match=r"monitor='nope'\): the validation logged no "
                                                                    r"such metric \(logged: val_loss\)"):
        warnings.simplefilter("ignore")
        trainer.fit(Validated(net), loader, loader)


def test_lightning_resumed_from_a_checkpoint_saved_without_the_callback_is_refused(policy_with_protocol, tmp_path):
    from lightning.pytorch import Callback, Trainer

    from lhopt_cli.integrations.lightning import LhoptCallback

    class SaveAt16(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 16:
                trainer.save_checkpoint(tmp_path / "plain.ckpt")

    lightning_run([SaveAt16()], steps=16)  # a run without lhopt
    net, x, y = user_problem()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    trainer = Trainer(max_steps=STEPS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[LhoptCallback(policy_with_protocol(decisions=8))])
    with warnings.catch_warnings(), pytest.raises(ValueError, match="cannot resume from step 16: the checkpoint holds "
                                                                    "no controller state"):
        warnings.simplefilter("ignore")
        trainer.fit(Module(net), loader, ckpt_path=str(tmp_path / "plain.ckpt"))
