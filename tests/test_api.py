"""The Controller driving torch's AdamW in a user's own loop."""
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from lhopt_cli import Controller, PolicyFileError, ProtocolError
from lhopt_cli.control.actions import HEAD_NAMES, NO_OP
from lhopt_cli.control.protocol import decision_steps


def user_problem(seed=0):
    torch.manual_seed(seed)
    x, y = torch.randn(256, 8), torch.randint(0, 3, (256,))
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    return net, x, y


def train(ctrl, net, opt, x, y, steps, valid_every=10, on_step=None):
    losses = []
    for step in range(steps):
        idx = torch.arange(step * 16, step * 16 + 16) % 256
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        loss.backward()
        valid = nn.functional.cross_entropy(net(x), y).item() if step % valid_every == 0 else None
        take = ctrl.step(loss=loss.item(), valid_loss=valid)
        if on_step:
            on_step(step)
        if take:
            opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_controller_drives_adamw_in_a_user_loop(policy_with_protocol):
    net, x, y = user_problem()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ctrl = Controller.from_checkpoint(policy_with_protocol(decisions=8)).attach(opt, total_steps=60, model=net)
    seen = []
    train(ctrl, net, opt, x, y, 60, on_step=lambda step: seen.append(opt.param_groups[0]["lr"]))
    assert len(ctrl.history) == 8  # one row per decision
    assert [row["step"] for row in ctrl.history] == sorted(ctrl.boundaries)
    # what the optimizer used is what the controller decided, from each decision on
    for row in ctrl.history:
        assert seen[row["step"]] == pytest.approx(row["lr"])
    group = opt.param_groups[0]
    assert group["betas"] == (ctrl.hparams.beta1, ctrl.hparams.beta2) and group["eps"] == ctrl.hparams.eps
    assert group["weight_decay"] == ctrl.hparams.weight_decay and ctrl.step_index == 60


class Scripted:
    """Stands in for the network's choices only: save at the 2nd decision, load at the 4th."""

    def __init__(self, agent):
        self.agent, self.calls = agent, 0

    def initial_state(self, batch):
        return self.agent.initial_state(batch)

    def act(self, obs, state, done, greedy, generator, mask=None):
        self.calls += 1
        action = list(NO_OP)
        if self.calls in (2, 4):
            action[HEAD_NAMES.index("restart")] = 1 if self.calls == 2 else 4  # save / load register 0
        return torch.tensor([action]), state


def test_restart_restores_the_users_model_and_optimizer(policy_with_protocol):
    net, x, y = user_problem(1)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    ctrl = Controller.from_checkpoint(policy_with_protocol(decisions=4))
    ctrl.agent = Scripted(ctrl.agent)
    ctrl.attach(opt, total_steps=50, model=net)
    snapshots = {}

    def capture(step):
        if step in ctrl.boundaries:
            snapshots[step] = (copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict()["state"]))

    train(ctrl, net, opt, x, y, 50, on_step=capture)
    save_step, load_step = ctrl.boundaries[1], ctrl.boundaries[3]
    assert [row["restart"] for row in ctrl.history] == ["none", "save", "none", "load"]
    saved_weights, saved_state = snapshots[save_step]
    loaded_weights, loaded_state = snapshots[load_step]
    for name, tensor in saved_weights.items():
        assert torch.equal(loaded_weights[name], tensor)  # the weights right after the load
    for key in saved_state:
        assert torch.equal(loaded_state[key]["exp_avg"], saved_state[key]["exp_avg"])
        assert float(loaded_state[key]["step"]) == float(saved_state[key]["step"])


def test_clear_errors_for_wrong_optimizer_or_missing_total_steps(smoke_policy):
    net, _, _ = user_problem()
    ctrl = Controller.from_checkpoint(smoke_policy)
    with pytest.raises(TypeError, match="not AdamW-like"):
        ctrl.attach(torch.optim.SGD(net.parameters(), lr=0.1), total_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        ctrl.attach(torch.optim.AdamW(net.parameters()))
    with pytest.raises(RuntimeError, match="attach"):
        Controller.from_checkpoint(smoke_policy).step(loss=1.0)


def test_missing_or_corrupt_policy_file(tmp_path):
    with pytest.raises(PolicyFileError, match="no such policy file"):
        Controller.from_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_text("garbage")
    with pytest.raises(PolicyFileError, match="not a readable lhopt policy file"):
        Controller.from_checkpoint(tmp_path / "bad.pt")


# --- the Controller in a plain loop observes and decides exactly as the engine -------------
class ForcedRestarts:
    """A real policy network acting greedily, whose restart head is overridden at two decisions
    (save to register 0, then load it), so both paths meet a save and an effective load."""

    def __init__(self, agent, save_at: int, load_at: int):
        self.agent, self.save_at, self.load_at, self.calls = agent, save_at, load_at, 0

    def initial_state(self, batch):
        return self.agent.initial_state(batch)

    def act(self, obs, state, done, greedy=False, generator=None, mask=None):
        action, state = self.agent.act(obs, state, done, greedy, generator, mask)
        self.calls += 1
        restart = HEAD_NAMES.index("restart")
        if self.calls in (self.save_at, self.load_at):
            action[:, restart] = 1 if self.calls == self.save_at else 4
        else:
            action[:, restart] = 0
        return action, state


def lively_agent(seed: int):
    """A policy network whose greedy choices depend on what it sees (mostly no-ops, often not)."""
    from lhopt_cli.control.actions import prior_logits
    from lhopt_cli.control.policy import lhopt_agent

    torch.manual_seed(seed)
    agent = lhopt_agent(32, prior_logits=prior_logits(1.0, 0.0))
    with torch.no_grad():
        agent.actor[-1].weight.mul_(150.0)
    return agent


def plain_loop(task, seed: int, ctrl: Controller) -> dict[int, float]:
    """The user's loop: the task's model, data order and loss, torch's AdamW; the validation
    losses at ctrl.validation_steps (and at the end)."""
    from lhopt_cli.control.actions import EVAL_START

    model = task.make_model(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    hp = EVAL_START
    opt = torch.optim.AdamW(params, lr=hp.lr, betas=(hp.beta1, hp.beta2), eps=hp.eps, weight_decay=hp.weight_decay)
    ctrl.attach(opt, total_steps=task.total_steps, model=model)
    valid = {}
    for step, batch in zip(range(task.total_steps), task.train_batches(seed)):
        if step in ctrl.validation_steps:
            valid[step] = task.valid_loss(model)
        loss = task.loss(model, batch)
        loss.backward()
        if ctrl.step(loss=loss.item(), valid_loss=valid.get(step)):
            opt.step()
        opt.zero_grad()
    valid[task.total_steps] = task.valid_loss(model)
    return valid


@pytest.mark.parametrize("task_cfg", [
    {"name": "mlp_digits", "hidden": [32], "activation": "tanh", "norm": "none", "batch_size": 16},
    {"name": "nqm", "dim": 50, "condition": 100.0, "noise": 0.3, "batch_size": 16, "steps": 80},
])
def test_the_controller_in_a_plain_loop_matches_run_policy(smoke_policy, task_cfg, monkeypatch):
    import lhopt_cli.inner.guard as guard
    from lhopt_cli.control.rollout import run_policy
    from lhopt_cli.tasks import build_task

    # the lively agent stalls the quadratic; the loop below records the loss it measured, the engine
    # the loss returned to: stalls are compared in test_guard.py
    monkeypatch.setattr(guard, "STALL_AFTER", math.inf)
    ctrl = Controller.from_checkpoint(smoke_policy)
    protocol = ctrl.protocol
    task_cfg = {**task_cfg, "eval_points": protocol.eval_points, "max_steps": None, "valid_size": None}
    task = build_task(task_cfg)
    (engine,) = run_policy(ForcedRestarts(lively_agent(3), save_at=12, load_at=30), task_cfg, [0], protocol, greedy=True)
    ctrl.agent = ForcedRestarts(lively_agent(3), save_at=12, load_at=30)
    valid = plain_loop(task, 0, ctrl)

    assert len(ctrl.history) == len(engine.decisions) >= 40
    kinds = [row["restart"] for row in ctrl.history]
    assert kinds.count("save") == 1 and kinds.count("load") == 1
    changes = sum(a["lr"] != b["lr"] or a["beta1"] != b["beta1"] for a, b in zip(ctrl.history, ctrl.history[1:]))
    assert changes >= 5  # the decisions depend on what the policy sees
    for ours, theirs in zip(ctrl.history, engine.decisions):
        assert ours == theirs  # the same choices from the same start: the same floats
    curve = {row["step"]: row["valid_loss"] for row in engine.result.curve}
    assert sorted(curve) == sorted(valid)
    for step, loss in valid.items():
        assert curve[step] == pytest.approx(loss, rel=1e-4, abs=1e-6)


def test_the_step_after_a_load_applies_a_gradient_of_the_restored_weights(policy_with_protocol):
    net, x, y = user_problem(1)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    ctrl = Controller.from_checkpoint(policy_with_protocol(decisions=4))
    ctrl.agent = Scripted(ctrl.agent)  # save at the 2nd decision, load at the 4th
    ctrl.attach(opt, total_steps=50, model=net)
    load_step = ctrl.boundaries[3]
    taken, weights, grads = {}, {}, {}

    for step in range(50):
        idx = torch.arange(step * 16, step * 16 + 16) % 256
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        loss.backward()
        taken[step] = ctrl.step(loss=loss.item())
        if step == load_step + 1:
            grads[step] = [p.grad.clone() for p in net.parameters()]
            weights["before"] = copy.deepcopy(net.state_dict())
        if taken[step]:
            opt.step()
        opt.zero_grad()
        if step == load_step:
            weights["after_load"] = copy.deepcopy(net.state_dict())
    assert [s for s, t in taken.items() if not t] == [load_step]  # only the load's step is skipped
    saved = ctrl.tracker.registers[0].state["model"]
    for name, tensor in saved.items():
        assert torch.equal(weights["after_load"][name], tensor)  # no stale gradient was applied
    # the next step's gradient is the gradient of the restored weights on its batch (clipped or not)
    fresh = copy.deepcopy(net)
    fresh.load_state_dict(saved)
    idx = torch.arange((load_step + 1) * 16, (load_step + 1) * 16 + 16) % 256
    nn.functional.cross_entropy(fresh(x[idx]), y[idx]).backward()
    for used, expected in zip(grads[load_step + 1], (p.grad for p in fresh.parameters())):
        cosine = torch.nn.functional.cosine_similarity(used.flatten(), expected.flatten(), dim=0)
        assert cosine == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("total, decisions", [(7, 6), (12, 5), (18, 5)])
def test_every_decision_of_the_controller_sees_measured_statistics(policy_with_protocol, monkeypatch, total, decisions):
    from lhopt_cli.control.features import FeatureTracker

    counts = []
    original = FeatureTracker.features

    def spy(self, progress, stats, count, *args, **kwargs):
        counts.append(count)
        return original(self, progress, stats, count, *args, **kwargs)

    monkeypatch.setattr(FeatureTracker, "features", spy)
    net, x, y = user_problem()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ctrl = Controller.from_checkpoint(policy_with_protocol(decisions=decisions, stats_every=4))
    ctrl.attach(opt, total_steps=total, model=net)
    train(ctrl, net, opt, x, y, total)
    assert len(counts) == decisions and all(c >= 1 for c in counts)
    assert all(len(ctrl.tracker.history[name]) == decisions for name in ("grad_norm", "rel_update", "noise_scale"))


def test_the_policy_files_protocol_rules_the_controller(policy_with_protocol):
    net, _, _ = user_problem()
    path = policy_with_protocol(decisions=5, stats_every=2, eval_points=4)
    ctrl = Controller.from_checkpoint(path).attach(torch.optim.AdamW(net.parameters()), total_steps=40, model=net)
    assert ctrl.boundaries == [7, 13, 20, 27, 33] and ctrl.stats_every == 2
    assert ctrl.validation_steps == [0, 10, 20, 30, 40]
    with pytest.raises(ProtocolError, match="decisions=8 contradicts the policy's observation protocol"):
        Controller.from_checkpoint(path).attach(torch.optim.AdamW(net.parameters()), total_steps=40, decisions=8)
    spaced = policy_with_protocol(decisions=64, min_interval=8)  # 60 steps: room for 6 decisions 8+ steps apart
    ctrl = Controller.from_checkpoint(spaced).attach(torch.optim.AdamW(net.parameters()), total_steps=60, model=net)
    assert ctrl.boundaries == decision_steps(60, 64, 8) and len(ctrl.boundaries) == 6
    assert min(np.diff([0, *ctrl.boundaries, 60])) >= 8


@pytest.mark.parametrize("parameter_count", ["all", "non_embedding"])
def test_the_engine_and_the_controller_count_parameters_alike(policy_with_protocol, parameter_count):
    from lhopt_cli.control.env import VecLhoptEnv
    from lhopt_cli.tasks import build_task
    from lhopt_cli.tasks.families import TaskFamily

    task_cfg = {"name": "char_lm", "n_layer": 1, "d_model": 16, "n_head": 2, "context": 16, "max_chars": 4000,
                "batch_size": 4, "eval_points": 25, "max_steps": 20, "valid_size": None, "text_path": None}
    env = VecLhoptEnv(TaskFamily({"kinds": {"char_lm": {}}}), num_envs=1, autoreset=False,
                      protocol={"parameter_count": parameter_count}, fixed={"task": task_cfg, "seeds": [0]})
    env.reset()
    model = build_task(task_cfg).make_model(0)
    ctrl = Controller.from_checkpoint(policy_with_protocol(parameter_count=parameter_count))
    ctrl.attach(torch.optim.AdamW(model.parameters()), total_steps=20, model=model)
    everything = sum(p.numel() for p in model.parameters())
    expected = everything if parameter_count == "all" else build_task(task_cfg).num_params
    assert env.trackers[0].num_params == ctrl.tracker.num_params == expected
    assert build_task(task_cfg).num_params < everything  # char_lm has embeddings: the two counts differ


@pytest.mark.parametrize("protocol, message", [
    ({"decisions": "abc", "stats_every": 4, "eval_points": 25, "parameter_count": "all"}, "decisions must be an integer"),
    ({"decisions": 64, "stats_every": float("nan"), "eval_points": 25, "parameter_count": "all"}, "stats_every must be"),
    ({"decisions": 64, "stats_every": 4, "eval_points": 10**12, "parameter_count": "all"}, "eval_points must be"),
    ({"decisions": True, "stats_every": 4, "eval_points": 25, "parameter_count": "all"}, "decisions must be"),
    ({"decisions": 8}, "missing key 'stats_every'"),
    ([1, 2], "expected a mapping"),
])
def test_a_policy_file_with_a_malformed_protocol_is_refused_in_one_line(smoke_policy, tmp_path, protocol, message):
    from lhopt_cli.control.checkpoint import atomic_save

    blob = torch.load(smoke_policy, map_location="cpu", weights_only=True)
    blob["protocol"] = protocol
    atomic_save(blob, tmp_path / "bad.pt")
    with pytest.raises(PolicyFileError, match=message):
        Controller.from_checkpoint(tmp_path / "bad.pt")


def test_only_controlled_embeddings_leave_the_non_embedding_count(policy_with_protocol):
    model = nn.Sequential(nn.Embedding(100, 8), nn.Flatten(), nn.Linear(8, 3))
    model[0].weight.requires_grad_(False)  # frozen, not in the optimizer
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    ctrl = Controller.from_checkpoint(policy_with_protocol(parameter_count="non_embedding"))
    assert ctrl.attach(opt, total_steps=20, model=model).tracker.num_params == 8 * 3 + 3
    with pytest.raises(ProtocolError, match="decisions must be an integer"):
        ctrl.attach(opt, total_steps=20, decisions="64")


# --- optimizers as people configure them ------------------------------------------------------
def test_param_groups_keep_their_ratios_and_a_zero_weight_decay_stays_zero():
    net, x, y = user_problem()
    weights, biases = [net[0].weight, net[2].weight], [net[0].bias, net[2].bias]
    opt = torch.optim.AdamW([{"params": weights, "weight_decay": 0.1},
                             {"params": biases, "weight_decay": 0.0, "lr": 3e-3}], lr=1e-3)
    ctrl = Controller.from_pretrained().attach(opt, total_steps=64, model=net)
    train(ctrl, net, opt, x, y, 64)
    decay, no_decay = opt.param_groups
    assert decay["lr"] != 1e-3  # the policy moved the learning rate over 64 decisions
    assert no_decay["lr"] == pytest.approx(3 * decay["lr"])
    assert decay["weight_decay"] == pytest.approx(ctrl.hparams.weight_decay) and decay["weight_decay"] > 0
    assert no_decay["weight_decay"] == 0.0
    assert no_decay["betas"] == pytest.approx(decay["betas"]) and no_decay["eps"] == pytest.approx(decay["eps"])


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_a_weight_decay_of_zero_runs_and_stays_zero(weight_decay):
    net, x, y = user_problem()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=weight_decay)
    ctrl = Controller.from_pretrained().attach(opt, total_steps=32)
    losses = train(ctrl, net, opt, x, y, 32)
    assert np.isfinite(losses).all() and len(ctrl.history) > 0
    if weight_decay == 0.0:
        assert all(row["weight_decay"] == 0.0 for row in ctrl.history)
        assert opt.param_groups[0]["weight_decay"] == 0.0


def test_stepping_past_total_steps_is_an_error_that_says_so():
    net, x, y = user_problem()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ctrl = Controller.from_pretrained().attach(opt, total_steps=16)
    train(ctrl, net, opt, x, y, 16)
    with pytest.raises(RuntimeError, match="step\\(\\) called 17 times, but attach\\(\\) was told total_steps=16"):
        train(ctrl, net, opt, x, y, 1)


def _resumable_run(ctrl_factory, steps, cut=None, path=None):
    """64-step user loop; with `cut`, stop there, save model, optimizer and controller the usual
    way, rebuild everything from the files and continue. Returns (history, final weights)."""
    net, x, y = user_problem()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ctrl = ctrl_factory().attach(opt, total_steps=steps, model=net)
    step = 0

    def run_until(end):
        nonlocal step
        while step < end:
            idx = torch.arange(step * 16, step * 16 + 16) % 256
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            valid = nn.functional.cross_entropy(net(x), y).item() if step in ctrl.validation_steps else None
            if ctrl.step(loss=loss.item(), valid_loss=valid):
                opt.step()
            opt.zero_grad()
            step += 1

    if cut is not None:
        run_until(cut)
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "controller": ctrl.state_dict()}, path)
        saved = torch.load(path, weights_only=True)
        net, _, _ = user_problem(seed=1)  # other initial weights: everything must come from the file
        net.load_state_dict(saved["model"])
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        opt.load_state_dict(saved["optimizer"])
        ctrl = ctrl_factory().attach(opt, total_steps=steps, model=net)
        ctrl.load_state_dict(saved["controller"])
    run_until(steps)
    return ctrl.history, [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("greedy", [True, False])
def test_a_run_resumed_from_its_checkpoint_decides_exactly_as_the_uninterrupted_one(tmp_path, greedy):
    factory = lambda: Controller.from_pretrained(greedy=greedy, seed=3)  # noqa: E731
    straight, weights = _resumable_run(factory, 64)
    resumed, resumed_weights = _resumable_run(factory, 64, cut=40, path=tmp_path / "ckpt.pt")
    assert resumed == straight  # every decision after the cut too, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(weights, resumed_weights))


def test_a_controller_state_of_another_run_length_or_kind_is_refused(tmp_path):
    net, x, y = user_problem()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ctrl = Controller.from_pretrained().attach(opt, total_steps=32)
    train(ctrl, net, opt, x, y, 8)
    state = ctrl.state_dict()
    other = Controller.from_pretrained().attach(opt, total_steps=64)
    with pytest.raises(ValueError, match="total_steps=32"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="not a Controller state"):
        other.load_state_dict({"model": {}})
    with pytest.raises(RuntimeError, match="before state_dict"):
        Controller.from_pretrained().state_dict()


def _amp_style_run(inject_at: set[int], steps: int = 48):
    """A GradScaler loop (scale, unscale_ before ctrl.step, scaler.step, update); at the loop
    iterations in `inject_at` one gradient is overwritten with inf, as an fp16 overflow would,
    and the batch is fed again (the data advance only with a step taken)."""
    net, x, y = user_problem()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ctrl = Controller.from_pretrained().attach(opt, total_steps=steps, model=net)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10) if inject_at is not None else None
    taken, iteration, skipped = 0, 0, 0
    while ctrl.step_index < steps:
        idx = torch.arange(taken * 16, taken * 16 + 16) % 256
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        valid = nn.functional.cross_entropy(net(x), y).item() if ctrl.step_index in ctrl.validation_steps else None
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            if iteration in inject_at:
                net[0].weight.grad[0, 0] = float("inf")
            scaler.unscale_(opt)
        before = ctrl.step_index
        if ctrl.step(loss=loss.item(), valid_loss=valid):
            opt.step() if scaler is None else scaler.step(opt)
        if scaler is not None:
            scaler.update()
        opt.zero_grad()
        skipped += ctrl.step_index == before
        taken = ctrl.step_index
        iteration += 1
    return ctrl.history, [p.detach().clone() for p in net.parameters()], skipped


def test_a_mixed_precision_loop_with_overflows_decides_as_the_fp32_loop():
    plain, plain_weights, _ = _amp_style_run(None)
    amp, amp_weights, skipped = _amp_style_run({3, 17, 30})
    assert skipped == 3  # the overflowed steps were not counted (a restore still counts)
    assert amp == plain
    assert all(torch.isfinite(w).all() for w in amp_weights)
    assert all(torch.equal(a, b) for a, b in zip(plain_weights, amp_weights))  # power-of-2 scaling is exact


def test_gradient_accumulation_counts_optimizer_steps():
    net, x, y = user_problem()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ctrl = Controller.from_pretrained().attach(opt, total_steps=24, model=net)
    for step in range(24):
        losses = []
        for micro in range(4):  # 4 micro-batches of 4 per optimizer step
            idx = torch.arange(step * 16 + micro * 4, step * 16 + micro * 4 + 4) % 256
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx]) / 4
            loss.backward()
            losses.append(loss.item())
        valid = nn.functional.cross_entropy(net(x), y).item() if step in ctrl.validation_steps else None
        if ctrl.step(loss=sum(losses), valid_loss=valid):
            opt.step()
        opt.zero_grad()
    assert ctrl.step_index == 24 and len(ctrl.history) == len(ctrl.boundaries)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_a_step_reads_the_device_once_and_a_decision_a_few_times(policy_with_protocol, monkeypatch):
    """Host transfers per call of ctrl.step, counted by patching every way a tensor reaches
    Python (item, float, int, bool, tolist): the gradient norm and the loss (given as a tensor)
    in one read per step; at a decision also the interval's statistics (summed on the device)
    and the CPU policy's action."""
    net, x, y = user_problem()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ctrl = Controller.from_checkpoint(policy_with_protocol(decisions=8, stats_every=2)).attach(opt, total_steps=60,
                                                                                                 model=net)
    reads: list[str] = []
    counting = {"on": False}
    for name in ("item", "__float__", "__int__", "__bool__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            if counting["on"]:
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    per_step = {}
    for step in range(60):
        idx = torch.arange(step * 16, step * 16 + 16) % 256
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        loss.backward()
        reads.clear()
        counting["on"] = True
        take = ctrl.step(loss=loss.detach())
        counting["on"] = False
        per_step[step] = list(reads)
        if take:
            opt.step()
        opt.zero_grad()
    decisions = set(ctrl.boundaries)
    assert len(decisions) == 8 and len(ctrl.history) == 8
    for step, seen in per_step.items():
        if step in decisions:
            assert len(seen) <= 4, (step, seen)  # norm+loss, statistics, action, the policy's reset check
        else:
            assert seen == ["tolist"], (step, seen)  # statistics sampled every 2nd step stay on the device
    assert len(ctrl.tracker.history["grad_norm"]) == 8  # every decision saw its statistics


def test_the_controllers_statistics_equal_the_engines_on_the_concatenated_parameters():
    from lhopt_cli.inner.stats import STAT_NAMES, adamw_stats, concatenated_adamw_stats

    torch.manual_seed(0)
    shapes = [(30, 20), (20,), (5, 30), (5,)]
    p, g = [torch.randn(s) for s in shapes], [torch.randn(s) for s in shapes]
    m, v = [torch.randn(s) * 0.1 for s in shapes], [torch.rand(s) * 0.01 for s in shapes]
    before = [t.clone() for t in (*p, *g, *m, *v)]
    ours = concatenated_adamw_stats(p, g, m, v, 0.9, 0.999, 1e-8, torch.tensor(8.0))
    assert all(torch.equal(a, b) for a, b in zip(before, (*p, *g, *m, *v)))  # nothing written in place

    def flat(ts):
        return torch.cat([t.reshape(-1) for t in ts])[None]

    grad = flat(g)
    engine = adamw_stats(flat(p), grad, torch.lerp(flat(m), grad, 0.1), flat(v) * 0.999 + 0.001 * grad * grad,
                         0.9, 0.999, 1e-8, 8.0)
    for i, name in enumerate(STAT_NAMES):
        assert float(ours[i]) == pytest.approx(float(engine[name][0]), rel=2e-5, abs=1e-7), name


def test_attach_refuses_what_the_policy_cannot_drive_and_takes_numpy_step_counts(policy_with_protocol):
    from lhopt_cli import PolicyFileError

    net = nn.Linear(4, 2)
    ctrl = Controller.from_checkpoint(policy_with_protocol(decisions=4))
    for optimizer in (torch.optim.Adam(net.parameters(), weight_decay=0.01), torch.optim.NAdam(net.parameters())):
        with pytest.raises(TypeError, match="L2 term on the gradient"):
            ctrl.attach(optimizer, total_steps=10)
    ctrl.attach(torch.optim.Adam(net.parameters(), decoupled_weight_decay=True), total_steps=10)  # = AdamW
    with pytest.raises(ValueError, match="total_steps"):
        ctrl.attach(torch.optim.AdamW(net.parameters()), total_steps=True)
    assert ctrl.attach(torch.optim.AdamW(net.parameters()), total_steps=np.int64(10)).total_steps == 10
    with pytest.raises(ValueError, match="learning rate is 0"):
        ctrl.attach(torch.optim.AdamW(net.parameters(), lr=0.0), total_steps=10)
    for empty in ("", 0):
        with pytest.raises(PolicyFileError, match="give a policy file"):
            Controller.from_pretrained(empty)
    with pytest.raises(PolicyFileError, match="a folder, not a policy file"):
        Controller.from_pretrained(policy_with_protocol(decisions=4).parent)


def test_a_diverged_run_without_the_guard_still_counts_its_steps(policy_with_protocol):
    net, x, y = user_problem()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ctrl = Controller.from_checkpoint(policy_with_protocol(decisions=4), guard=False).attach(opt, total_steps=20,
                                                                                            model=net)
    taken = []
    for step in range(20):
        loss = nn.functional.cross_entropy(net(x[:16]), y[:16])
        if step >= 10:  # the model has diverged: NaN loss and gradients
            loss = loss * float("nan")
        loss.backward()
        taken.append(ctrl.step(loss=loss.detach()))
        if taken[-1]:
            opt.step()
        opt.zero_grad()
    assert ctrl.step_index == 20 and taken == [True] * 10 + [False] * 10  # counted, no update
    assert all(torch.isfinite(p).all() for p in net.parameters())
    with pytest.raises(ValueError, match="one number"):
        Controller.from_checkpoint(policy_with_protocol(decisions=4)).attach(opt, total_steps=5).step(
            loss=torch.ones(3))


def test_a_seeds_policy_run_is_the_same_whatever_seeds_run_beside_it():
    from lhopt_cli.control.protocol import ObservationProtocol
    from lhopt_cli.control.rollout import run_policy

    task = {"name": "mlp_digits", "hidden": [32], "activation": "tanh", "norm": "none", "batch_size": 16, "eval_points": 10}
    protocol = ObservationProtocol(decisions=20, eval_points=10)
    alone = run_policy(lively_agent(3), task, [1], protocol, greedy=True)[0]
    together = run_policy(lively_agent(3), task, [0, 1, 2], protocol, greedy=True)[1]
    assert together.decisions == alone.decisions
    assert [p["valid_loss"] for p in together.result.curve] == [p["valid_loss"] for p in alone.result.curve]


def _misuse_loop(steplr: bool = False, validate: bool = True, backward: bool = True, steps: int = 40,
                 every_step: bool = False):
    """A plain loop with the bundled policy; returns the ControllerMisuseWarning messages."""
    import warnings

    import lhopt_cli as lhopt

    torch.manual_seed(0)
    x, y = torch.randn(256, 8), torch.randn(256, 1)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ctrl = lhopt.Controller.from_pretrained().attach(opt, total_steps=steps, model=net)
    other = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5) if steplr else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(steps):
            loss = torch.nn.functional.mse_loss(net(x), y)
            if backward:
                loss.backward()
            with torch.no_grad():
                due = every_step or step in ctrl.validation_steps
                valid = torch.nn.functional.mse_loss(net(x), y).item() if validate and due else None
            if ctrl.step(loss=loss.item(), valid_loss=valid):
                opt.step()
            opt.zero_grad()
            if other is not None:
                other.step()
    return [str(w.message) for w in caught if issubclass(w.category, lhopt.ControllerMisuseWarning)]


def test_a_loop_that_uses_the_controller_as_documented_hears_nothing():
    assert _misuse_loop() == []


@pytest.mark.parametrize("misuse, expected", [
    ({"steplr": True}, "the learning rate changed between two Controller.step() calls"),
    ({"validate": False}, "no valid_loss at step 0, one of ctrl.validation_steps"),
    ({"backward": False}, "Controller.step() found no gradient on any parameter"),
    ({"every_step": True}, "a valid_loss at step 1, not one of ctrl.validation_steps"),
])
def test_a_loop_that_works_against_the_controller_is_told_once(misuse, expected):
    messages = _misuse_loop(**misuse)
    assert len(messages) == 1 and messages[0].startswith(expected), messages


def test_attaching_to_an_adamw_without_weight_decay_says_the_policy_cannot_set_it():
    import warnings

    import lhopt_cli as lhopt

    net = torch.nn.Linear(4, 1)
    for decay, heard in ((0.0, 1), (0.01, 0)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lhopt.Controller.from_pretrained().attach(torch.optim.AdamW(net.parameters(), weight_decay=decay), total_steps=10)
        messages = [str(w.message) for w in caught if issubclass(w.category, lhopt.ControllerMisuseWarning)]
        assert len(messages) == heard and all("weight-decay actions do nothing" in m for m in messages)


def test_lhopt_adamw_makes_the_controllers_decisions_and_updates_in_fewer_lines():
    import lhopt_cli as lhopt

    def run(own_controller: bool):
        torch.manual_seed(0)
        x, y = torch.randn(256, 8), torch.randn(256, 1)
        net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        if own_controller:
            opt = lhopt.LhoptAdamW(net.parameters(), total_steps=60, model=net)
            ctrl = opt.controller
        else:
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
            ctrl = lhopt.Controller.from_pretrained().attach(opt, total_steps=60, model=net)
        for step in range(60):
            loss = torch.nn.functional.mse_loss(net(x), y)
            loss.backward()
            with torch.no_grad():
                valid = torch.nn.functional.mse_loss(net(x), y).item() if step in ctrl.validation_steps else None
            if own_controller:
                opt.step(loss=loss.item(), valid_loss=valid)
            elif ctrl.step(loss=loss.item(), valid_loss=valid):
                opt.step()
            opt.zero_grad()
        return ctrl.history, [p.detach().clone() for p in net.parameters()]

    (history, weights), (plain_history, plain_weights) = run(True), run(False)
    assert history == plain_history and len(history) > 1
    assert all(torch.equal(a, b) for a, b in zip(weights, plain_weights))
    with pytest.raises(TypeError, match="needs the step's loss"):
        lhopt.LhoptAdamW(torch.nn.Linear(2, 1).parameters(), total_steps=5).step()


@pytest.mark.parametrize("call, message", [
    (lambda c, opt, net: c.attach(opt, total_steps=10, model="net"), "attach\\(model=...\\) takes the torch.nn.Module"),
    (lambda c, opt, net: c.attach("adamw", total_steps=10), "attach\\(\\) needs the torch optimizer"),
    (lambda c, opt, net: c.attach(None, total_steps=10), "attach\\(\\) needs the torch optimizer"),
    (lambda c, opt, net: c.attach(opt, total_steps=10, model=net).step(loss=None), "step\\(loss=...\\) takes"),
])
def test_library_calls_with_the_wrong_kind_of_argument_are_one_clear_type_error(call, message):
    from lhopt_cli import Controller

    net = torch.nn.Linear(3, 2)
    with pytest.raises(TypeError, match=message):
        call(Controller.from_pretrained(), torch.optim.AdamW(net.parameters(), lr=1e-3), net)


def state_after_four_steps(ctrl, net) -> dict:
    """`ctrl` attached to an AdamW on `net` for 10 steps, stepped 4 times; its state_dict()."""
    ctrl.attach(torch.optim.AdamW(net.parameters(), lr=1e-3), total_steps=10, model=net)
    for _ in range(4):
        net(torch.randn(4, 3)).pow(2).mean().backward()
        ctrl.step(loss=1.0)
    return ctrl.state_dict()


@pytest.mark.parametrize("damage", ["drop_clipper", "drop_tracker_key", "bad_generator", "other_groups"])
def test_a_truncated_or_foreign_controller_state_changes_nothing(damage):
    from lhopt_cli import Controller

    net = torch.nn.Linear(3, 2)
    state = state_after_four_steps(Controller.from_pretrained(), net)
    if damage == "drop_clipper":
        del state["clipper"]
    elif damage == "drop_tracker_key":
        state["tracker"] = {k: v for k, v in state["tracker"].items() if k != "registers"}
    elif damage == "bad_generator":
        state["generator"] = torch.zeros(3)
    else:
        state["group_scales"] = state["group_scales"] * 2
    fresh = Controller.from_pretrained()
    fresh.attach(torch.optim.AdamW(net.parameters(), lr=1e-3), total_steps=10, model=net)
    before = (fresh.step_index, fresh.hparams, fresh.history, [x.clone() for x in fresh.state])
    with pytest.raises(ValueError, match="not a whole Controller state.*nothing was changed"):
        fresh.load_state_dict(state)
    after = (fresh.step_index, fresh.hparams, fresh.history, fresh.state)
    assert after[:3] == before[:3] and all(torch.equal(a, b) for a, b in zip(after[3], before[3]))


def test_a_policy_file_whose_weights_are_not_finite_is_refused(tmp_path):
    from lhopt_cli import Controller
    from lhopt_cli.loop.controller import default_policy_path
    from lhopt_cli.control.checkpoint import PolicyFileError, load_policy, save_policy

    agent, meta = load_policy(default_policy_path())
    with torch.no_grad():
        next(agent.parameters()).view(-1)[0] = float("nan")
    from lhopt_cli.control.checkpoint import policy_protocol

    save_policy(agent, tmp_path / "nan.pt", meta.get("config") or {}, policy_protocol(meta))  # whole, CRCs and all
    with pytest.raises(PolicyFileError, match="its weights are not finite"):
        Controller.from_pretrained(tmp_path / "nan.pt")


def test_lhopt_adamw_resumed_from_its_own_state_dict_is_the_uninterrupted_run(tmp_path):
    from lhopt_cli import LhoptAdamW

    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x @ torch.randn(8, 1)).tanh()

    def make():
        torch.manual_seed(1)
        net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
        return net, LhoptAdamW(net.parameters(), total_steps=80, model=net)

    def train(net, opt, steps):
        for step in steps:
            loss = torch.nn.functional.mse_loss(net(x[:192]), y[:192])
            loss.backward()
            with torch.no_grad():
                valid = torch.nn.functional.mse_loss(net(x[192:]), y[192:]).item() if step in opt.validation_steps else None
            opt.step(loss=loss, valid_loss=valid)
            opt.zero_grad()

    whole_net, whole = make()
    train(whole_net, whole, range(80))
    net, opt = make()
    train(net, opt, range(40))
    torch.save({"model": net.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    net2, opt2 = make()
    net2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    train(net2, opt2, range(40, 80))
    assert opt2.controller.history == whole.controller.history and opt2.controller.step_index == 80
    for ours, theirs in zip(net2.parameters(), whole_net.parameters()):
        torch.testing.assert_close(ours, theirs)
    plain = torch.optim.AdamW(net.parameters()).state_dict()
    with pytest.raises(ValueError, match="no controller state"):
        make()[1].load_state_dict(plain)
    # a controller state it refuses leaves AdamW's state and lr as they were too
    damaged = {**saved["opt"], "lhopt": {**saved["opt"]["lhopt"], "tracker": {**saved["opt"]["lhopt"]["tracker"],
                                                                           "registers": []}}}
    _, untouched = make()
    before = (untouched.param_groups[0]["lr"], len(untouched.state))
    with pytest.raises(ValueError, match="nothing was changed"):
        untouched.load_state_dict(damaged)
    assert (untouched.param_groups[0]["lr"], len(untouched.state)) == before


@pytest.mark.parametrize("damage", ["registers", "history", "another_policy", "lr_nan", "step_outside", "beta1_5",
                                    "eps_negative", "step_fraction", "ratio_nan"])
def test_a_controller_state_that_does_not_belong_to_this_run_is_refused_whole(damage, tmp_path):
    from lhopt_cli import Controller
    from lhopt_cli.loop.controller import default_policy_path
    from lhopt_cli.control.checkpoint import load_policy, policy_protocol, save_policy
    from lhopt_cli.control.policy import lhopt_agent

    net = torch.nn.Linear(3, 2)
    path = default_policy_path()
    if damage == "another_policy":  # a network of another size, saved as a policy file
        _, meta = load_policy(path)
        small = lhopt_agent(16, float(meta["obs_clip"]))
        path = tmp_path / "small.pt"
        save_policy(small, path, {}, policy_protocol(meta))
    state = state_after_four_steps(Controller.from_pretrained(path), net)
    if damage == "registers":
        state["tracker"]["registers"] = []
    elif damage == "history":
        state["tracker"]["history"] = {}
    elif damage == "lr_nan":
        state["hparams"]["lr"] = float("nan")
    elif damage == "step_outside":
        state["step_index"] = -5
    elif damage == "beta1_5":
        state["hparams"]["beta1"] = 5.0
    elif damage == "eps_negative":
        state["hparams"]["eps"] = -1.0
    elif damage == "step_fraction":
        state["step_index"] = 3.7
    elif damage == "ratio_nan":
        state["group_scales"][0]["lr"] = float("nan")
    fresh = Controller.from_pretrained()
    fresh.attach(torch.optim.AdamW(net.parameters(), lr=1e-3), total_steps=10, model=net)
    with pytest.raises(ValueError, match="nothing was changed"):
        fresh.load_state_dict(state)
    assert fresh.step_index == 0 and fresh.history == []


def test_the_bundled_policys_64_decisions_in_a_plain_loop_are_the_engines():
    """The Controller's statistics (one concatenation per sample) against the engine's [K, N] rows
    (inner/batched.py, unchanged): the bundled policy's 64 decisions on mlp_mnist are the same."""
    from lhopt_cli.control.rollout import run_policy
    from lhopt_cli.tasks import build_task

    ctrl = Controller.from_pretrained()
    task_cfg = {"name": "mlp_mnist", "hidden": [128], "activation": "relu", "norm": "none", "batch_size": 32,
                "eval_points": ctrl.protocol.eval_points, "max_steps": None, "valid_size": None}
    (engine,) = run_policy(ctrl.agent, task_cfg, [0], ctrl.protocol, greedy=True)
    plain_loop(build_task(task_cfg), 0, ctrl)
    assert len(ctrl.history) == len(engine.decisions) == 64
    assert len({row["lr"] for row in ctrl.history}) >= 3  # the decisions move the lr
    for ours, theirs in zip(ctrl.history, engine.decisions):
        assert ours == theirs
