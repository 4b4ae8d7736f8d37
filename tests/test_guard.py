"""The divergence guard: a NaN/inf loss sends a run back to its last guard point, half the lr."""
import json
import math
from dataclasses import replace

import pytest
import torch

from lhopt_cli import Controller
from lhopt_cli.config.compose import ConfigError
from lhopt_cli.control.actions import HEAD_NAMES, HEADS, NO_OP
from lhopt_cli.control.rollout import run_policy
from lhopt_cli.commands.evaluate import claim_run_dir
from lhopt_cli.inner.batched import BatchedRun
from lhopt_cli.inner.guard import guarded_hparams
from lhopt_cli.inner.hooks import Hook
from lhopt_cli.inner.optim import HParams
from lhopt_cli.tasks import build_task

from test_api import plain_loop

TASK = {"name": "mlp_digits", "hidden": [32], "activation": "tanh", "norm": "none", "batch_size": 16,
        "eval_points": 10}


def test_guarded_hyperparameters_are_the_points_with_half_the_smaller_lr():
    point = HParams(lr=4e-3, beta1=0.8, beta2=0.99, eps=1e-7, weight_decay=0.05, clip=0.5)
    now = HParams(lr=1e-2, beta1=0.95, beta2=0.9, eps=1e-6, weight_decay=0.2, clip=0.9)
    assert guarded_hparams(now, point) == replace(point, lr=2e-3)
    assert guarded_hparams(replace(now, lr=1e-3), point).lr == 5e-4  # the smaller of the two
    assert guarded_hparams(now, replace(point, lr=1e-8)).lr == 1e-8  # never below the actions' bound
    assert guarded_hparams(now, replace(point, lr=0.0)).lr == 0.0  # a frozen group stays frozen


@pytest.fixture
def loss_factor_4(monkeypatch):
    """The guard with a loss rule: a training loss above 4x the run's first one has blown up."""
    import lhopt_cli.inner.guard as guard

    monkeypatch.setattr(guard, "GUARD_LOSS_FACTOR", 4.0)


class Blowup(Hook):
    """Sets a learning rate that sends the weights to inf at `at`; offers guard points at `offer`;
    keeps the member's weights at the steps in `watch`."""

    def __init__(self, at: int, offer=(), watch=()):
        self.at, self.offer, self.watch, self.seen = at, set(offer), set(watch), {}

    def before_step(self, ctx):
        if ctx.engine.guard_restores[ctx.index] and "returned" not in self.seen:
            self.seen["returned"] = ctx.engine.member_state_dict(ctx.index)  # the weights returned to
        if ctx.step in self.offer:
            ctx.engine.set_guard_point(ctx.index)
        if ctx.step in self.watch:
            self.seen[ctx.step] = ctx.engine.member_state_dict(ctx.index)
        if ctx.step == self.at:
            ctx.hparams = replace(ctx.hparams, lr=1e30)


def test_without_the_guard_a_blown_up_member_ends_diverged():
    task = build_task(TASK)
    run = BatchedRun(task, [0, 1], [Blowup(20), Hook()], [HParams(lr=1e-3)] * 2)
    results = run.run()
    assert [r.status for r in results] == ["diverged", "done"]
    assert math.isnan(results[0].curve[-1]["valid_loss"])


def test_a_nan_sends_a_member_back_to_its_last_point_and_leaves_the_others_alone():
    task = build_task(TASK)
    plain = BatchedRun(task, [0, 1], [Blowup(20), Hook()], [HParams(lr=1e-3)] * 2).run()
    hook = Blowup(20, offer=[10], watch=[10])
    run = BatchedRun(task, [0, 1], [hook, Hook()], [HParams(lr=1e-3)] * 2, guard=True)
    results = run.run()
    assert [r.status for r in results] == ["done", "done"] and run.guard_restores == [1, 0]
    assert all(math.isfinite(p["valid_loss"]) for p in results[0].curve)
    assert len(results[0].curve) == len(results[1].curve) == len(task.eval_steps()) + 1
    for name, tensor in hook.seen[10].items():
        assert torch.equal(hook.seen["returned"][name], tensor)
    assert run.ctx[0].hparams.lr == 5e-4  # half the smaller of 1e30 and the point's 1e-3
    assert results[1].curve == [{**p, "wall_s": q["wall_s"]} for p, q in zip(plain[1].curve, results[1].curve)]


def test_a_point_offered_holds_only_after_a_healthy_loss(loss_factor_4):
    task = build_task(TASK)
    plain = BatchedRun(task, [0, 1], [Blowup(20), Hook()], [HParams(lr=1e-3)] * 2).run()
    hook = Blowup(20, offer=[10, 21], watch=[10, 22])
    run = BatchedRun(task, [0, 1], [hook, Hook()], [HParams(lr=1e-3)] * 2, guard=True)
    results = run.run()
    assert [r.status for r in results] == ["done", "done"]
    assert run.guard_restores == [1, 0]
    assert all(math.isfinite(p["valid_loss"]) for p in results[0].curve)
    assert len(results[0].curve) == len(results[1].curve) == len(task.eval_steps()) + 1
    # the point offered at step 21 held weights that were already inf (its loss was not finite),
    # so the member went back to the one offered at step 10, with half the lr it had there
    for name, tensor in hook.seen[10].items():
        assert torch.equal(hook.seen[22][name], tensor)
    assert run.ctx[0].hparams.lr == 5e-4
    assert results[1].curve == [{**p, "wall_s": q["wall_s"]} for p, q in zip(plain[1].curve, results[1].curve)]


class Doubling:
    """A policy that doubles the learning rate at each of its first `calls` decisions (all of
    them by default), then keeps everything as it is; it never saves or loads."""

    def __init__(self, calls: int | None = None):
        self.calls, self.made = calls, 0

    def initial_state(self, batch):
        return (torch.zeros(batch, 1),)

    def act(self, obs, state, done, greedy=False, generator=None, mask=None):
        self.made += 1
        action = list(NO_OP)
        if self.calls is None or self.made <= self.calls:
            action[HEAD_NAMES.index("lr")] = HEADS["lr"].index(2.0)
        return torch.tensor([action] * obs.shape[0]), state


def test_the_loss_rule_only_applies_where_it_is_set(monkeypatch):
    import lhopt_cli.inner.guard as guard

    assert guard.healthy(1e30, 2.0) and not guard.healthy(math.nan, 2.0) and not guard.healthy(math.inf, None)
    monkeypatch.setattr(guard, "GUARD_LOSS_FACTOR", 4.0)
    assert guard.healthy(8.0, 2.0) and not guard.healthy(8.1, 2.0)
    assert guard.healthy(100.0, None) and guard.healthy(100.0, -1.0)  # nothing to compare with


def test_a_policy_that_drives_the_lr_up_is_sent_back_with_the_guard(loss_factor_4):
    from lhopt_cli.control.protocol import ObservationProtocol

    protocol = ObservationProtocol(decisions=40, eval_points=10)
    unguarded = run_policy(Doubling(), TASK, [0, 1], protocol, greedy=True, guard=False)
    guarded = run_policy(Doubling(), TASK, [0, 1], protocol, greedy=True, guard=True)
    for plain, run in zip(unguarded, guarded):
        assert plain.decisions[-1]["lr"] == 1.0 and plain.decisions[-1]["guard_returns"] == 0  # at the bound
        lrs = [row["lr"] for row in run.decisions]
        # the policy doubles on: each return halves the lr, which it raises again to the bound
        assert run.result.status == "done" and min(lrs[lrs.index(1.0):]) < 1.0
        assert all(math.isfinite(p["valid_loss"]) for p in run.result.curve)
        returns = [row["guard_returns"] for row in run.decisions]
        assert returns == sorted(returns) and returns[-1] >= 3  # counted as they happen
    # until the first return both runs make the same decisions
    first = next(i for i, row in enumerate(guarded[0].decisions) if row["guard_returns"])
    assert [r["lr"] for r in guarded[0].decisions[:first]] == [r["lr"] for r in unguarded[0].decisions[:first]]


def test_the_controller_guards_a_plain_loop_as_the_engine_does(loss_factor_4):
    task = build_task({**TASK, "max_steps": None, "valid_size": None})
    from lhopt_cli.control.protocol import ObservationProtocol

    protocol = ObservationProtocol(decisions=40, eval_points=10)
    # up to lr 1.0 at the 11th decision, where the loss blows up; then it is left to the guard
    (engine,) = run_policy(Doubling(12), {**TASK, "max_steps": None, "valid_size": None}, [0], protocol, greedy=True)
    ctrl = Controller(Doubling(12), {"protocol": protocol.as_dict()})
    valid = plain_loop(task, 0, ctrl)
    assert len(ctrl.history) == len(engine.decisions) and ctrl.guard_returns >= 1
    first = next(i for i, row in enumerate(engine.decisions) if row["guard_returns"])
    # the same decisions up to the first return and right after it: lr 1.0 sent down, counted
    # (halved on a blow-up; at most half the start's 1e-3 when the network stalled at chance)
    assert ctrl.history[: first + 1] == engine.decisions[: first + 1]
    assert engine.decisions[first - 1]["lr"] == 1.0 and engine.decisions[first]["lr"] in (0.5, 5e-4)
    # (beyond it, at lr 0.5 on this net, float rounding between the vmapped engine and a plain
    # loop grows until the two runs part: the test of equality stops there)
    assert all(math.isfinite(v) for v in valid.values())


def test_a_non_finite_validation_loss_sends_the_controller_back_and_spends_the_step():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    protocol = {"decisions": 4, "stats_every": 4, "eval_points": 4, "parameter_count": "all", "min_interval": 1}
    ctrl = Controller(Doubling(), {"protocol": protocol}).attach(opt, total_steps=20, model=net)
    assert ctrl.boundaries == [4, 8, 12, 16]
    x = torch.randn(8, 4)
    taken, at_point = [], None
    for step in range(20):
        loss = net(x).pow(2).mean()
        loss.backward()
        if step == 8:  # the weights the decision at step 8 offers (held: this step's loss is finite)
            at_point = {k: v.clone() for k, v in net.state_dict().items()}
        taken.append(ctrl.step(loss=loss.item(), valid_loss=math.nan if step == 10 else None))
        if step == 10:  # back at step 8's weights, with half of step 8's lr (1e-2 doubled twice)
            assert ctrl.guard_returns == 1 and ctrl.hparams.lr == pytest.approx(2e-2)
            assert all(torch.equal(net.state_dict()[k], v) for k, v in at_point.items())
            assert opt.param_groups[0]["lr"] == pytest.approx(2e-2)
        if taken[-1]:
            opt.step()
        opt.zero_grad()
    assert taken.count(False) == 1 and not taken[10] and ctrl.step_index == 20
    assert ctrl.guard_returns == 1


def test_without_a_model_or_with_guard_false_the_controller_keeps_no_copy():
    net = torch.nn.Linear(4, 1)
    protocol = {"decisions": 4, "stats_every": 4, "eval_points": 4, "parameter_count": "all", "min_interval": 1}
    for kwargs, model in (({}, None), ({"guard": False}, net)):
        ctrl = Controller(Doubling(), {"protocol": protocol}, **kwargs)
        ctrl.attach(torch.optim.AdamW(net.parameters()), total_steps=10, model=model)
        assert ctrl.divergence_guard.point is None


def test_an_evaluate_folder_keeps_runs_of_one_guard_setting(tmp_path):
    policy = tmp_path / "p.pt"
    policy.write_bytes(b"weights")
    claim_run_dir(tmp_path, policy, greedy=True, guard=True)
    assert json.loads((tmp_path / "policy.json").read_text())["guard"] is True
    claim_run_dir(tmp_path, policy, greedy=True, guard=True)
    with pytest.raises(ConfigError, match="guard=false in another run_dir"):
        claim_run_dir(tmp_path, policy, greedy=True, guard=False)


def test_guard_points_reuse_two_buffers_and_the_saved_state_is_a_copy():
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    protocol = {"decisions": 10, "stats_every": 4, "eval_points": 4, "parameter_count": "all", "min_interval": 1}
    ctrl = Controller(Doubling(3), {"protocol": protocol}).attach(opt, total_steps=40, model=net)
    x = torch.randn(8, 4)
    buffers, saved = set(), None
    for step in range(40):
        net(x).pow(2).mean().backward()
        if ctrl.step(loss=1.0):
            opt.step()
        opt.zero_grad()
        buffers.add(ctrl.divergence_guard.point["state"]["model"]["weight"].data_ptr())
        if step == 20:
            saved = ctrl.state_dict()
            kept = saved["guard"]["point"]["state"]["model"]["weight"].clone()
    # the start's copy (kept: a stall goes back there) and two more in turn: decisions allocate nothing
    assert len(buffers) <= 3 and ctrl.divergence_guard.start["state"]["model"]["weight"].data_ptr() in buffers
    # the state_dict taken at step 20 is not rewritten by the decisions after it
    assert torch.equal(saved["guard"]["point"]["state"]["model"]["weight"], kept)
    held = ctrl.divergence_guard.point["state"]["model"]["weight"]
    assert not torch.equal(held, kept)  # later points hold later weights


STALL_TASK = {"name": "mlp_digits", "hidden": [64, 64, 64], "activation": "relu", "norm": "none", "batch_size": 16,
              "eval_points": 10}


def test_a_run_that_stalls_at_chance_with_a_finite_loss_is_sent_back_below_its_start_lr():
    from lhopt_cli.control.protocol import ObservationProtocol
    import lhopt_cli.inner.guard as guard

    protocol = ObservationProtocol(decisions=40, eval_points=10)
    # lr doubled 12 times from 1e-3 (to the bound): a deep ReLU net at chance, its loss finite
    (plain,) = run_policy(Doubling(12), STALL_TASK, [0], protocol, greedy=True, guard=False)
    curve = [p["valid_loss"] for p in plain.result.curve]
    assert all(math.isfinite(v) for v in curve) and curve[-1] >= curve[0]  # learned nothing, never NaN
    (guarded,) = run_policy(Doubling(12), STALL_TASK, [0], protocol, greedy=True, guard=True)
    lrs = [row["lr"] for row in guarded.decisions]
    assert guarded.decisions[-1]["guard_returns"] >= 1 and min(lrs) <= 5e-4  # half the start's, or less
    valid = [p["valid_loss"] for p in guarded.result.curve]
    # back at the start's weights, where a ReLU net at chance has none alive, and learning again
    assert valid[-1] < valid[0] and valid[-1] < curve[-1]
    assert valid[3:] == sorted(valid[3:], reverse=True)  # falling from the return on
    # the rule is what sent it back: without it the guard sees nothing wrong
    old, guard.STALL_AFTER = guard.STALL_AFTER, math.inf
    try:
        (unchecked,) = run_policy(Doubling(12), STALL_TASK, [0], protocol, greedy=True, guard=True)
    finally:
        guard.STALL_AFTER = old
    assert unchecked.decisions[-1]["guard_returns"] == 0


def test_the_stall_rule_waits_a_quarter_of_the_run_and_needs_a_start():
    from lhopt_cli.inner.guard import stalled

    assert not stalled(2.3, 2.3, 24, 100) and stalled(2.3, 2.3, 25, 100) and stalled(2.5, 2.3, 90, 100)
    assert not stalled(2.2, 2.3, 90, 100)  # below the start: learning
    assert not stalled(2.3, None, 90, 100) and not stalled(2.3, math.nan, 90, 100) and not stalled(math.inf, 2.3, 90, 100)


def test_the_controller_stalls_as_the_engine_does_and_keeps_its_yardstick_across_a_resume():
    from lhopt_cli.control.protocol import ObservationProtocol

    protocol = ObservationProtocol(decisions=40, eval_points=10)
    task = build_task({**STALL_TASK, "max_steps": None, "valid_size": None})
    (engine,) = run_policy(Doubling(12), {**STALL_TASK, "max_steps": None, "valid_size": None}, [0], protocol,
                           greedy=True)
    ctrl = Controller(Doubling(12), {"protocol": protocol.as_dict()})
    plain_loop(task, 0, ctrl)
    first = next(i for i, row in enumerate(engine.decisions) if row["guard_returns"])
    assert ctrl.history[: first + 1] == engine.decisions[: first + 1]
    assert ctrl.divergence_guard.initial_valid is not None and ctrl.state_dict()["guard"]["initial_valid"] == ctrl.divergence_guard.initial_valid


def test_the_stall_rule_tells_a_plateau_from_a_runaway_by_the_training_loss(monkeypatch):
    import lhopt_cli.inner.guard as guard
    from lhopt_cli.inner.guard import stalled, train_median

    monkeypatch.setattr(guard, "STALL_RULE", "runaway")
    start = train_median([2.3] * 9 + [9.0])  # the median: one spike does not move the start
    assert start == 2.3 and train_median([2.3] * 9) is None
    assert stalled(2.4, 2.3, 50, 100, train_now=2.29, train_start=start)  # no lower: a runaway
    assert not stalled(2.4, 2.3, 50, 100, train_now=2.0, train_start=start)  # 13% lower: a plateau, learning
    assert stalled(2.4, 2.3, 50, 100, train_now=2.2, train_start=start)  # 4% lower: within the margin
    assert stalled(2.4, 2.3, 50, 100) and stalled(2.4, 2.3, 50, 100, math.nan, start)  # unknown: validation decides
    monkeypatch.setattr(guard, "STALL_RULE", "start")
    assert stalled(2.4, 2.3, 50, 100, train_now=2.0, train_start=start)
    monkeypatch.setattr(guard, "STALL_RULE", "off")
    assert not stalled(2.4, 2.3, 50, 100, train_now=2.29, train_start=start)


def _loop_with_losses(training_loss, rule: str, monkeypatch) -> Controller:
    """A real model and AdamW under the Controller (no-op policy, guard on) told the training
    losses `training_loss(step)` and a validation loss stuck at its start's at every point."""
    import lhopt_cli.inner.guard as guard

    monkeypatch.setattr(guard, "STALL_RULE", rule)
    from lhopt_cli.control.protocol import ObservationProtocol

    task = build_task({**TASK, "max_steps": 100, "valid_size": None})
    model = task.make_model(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctrl = Controller(Doubling(0), {"protocol": ObservationProtocol(decisions=10, eval_points=10).as_dict()})
    ctrl.attach(opt, total_steps=100, model=model)
    for step, batch in zip(range(100), task.train_batches(0)):
        task.loss(model, batch).backward()
        if ctrl.step(loss=training_loss(step), valid_loss=2.3 if step in ctrl.validation_steps else None):
            opt.step()
        opt.zero_grad()
    return ctrl


@pytest.mark.parametrize("rule, falling, flat", [("runaway", 0, 1), ("start", 1, 1), ("off", 0, 0)])
def test_a_run_whose_training_loss_has_fallen_is_not_sent_back(rule, falling, flat, monkeypatch):
    learning = _loop_with_losses(lambda step: 2.3 * (1 - 0.005 * step), rule, monkeypatch)
    assert (learning.guard_returns >= 1) == bool(falling)
    stuck = _loop_with_losses(lambda step: 2.3, rule, monkeypatch)
    assert (stuck.guard_returns >= 1) == bool(flat)
    state = learning.state_dict()["guard"]
    assert state["first_train"] == [2.3 * (1 - 0.005 * s) for s in range(10)] and len(state["latest_train"]) == 10


def test_a_controller_state_whose_stall_losses_are_not_finite_is_refused():
    from lhopt_cli.control.protocol import ObservationProtocol

    task = build_task({**TASK, "max_steps": 40, "valid_size": None})
    ctrl = Controller(Doubling(0), {"protocol": ObservationProtocol(decisions=4, eval_points=4).as_dict()})
    model = task.make_model(0)
    ctrl.attach(torch.optim.AdamW(model.parameters()), total_steps=40, model=model)
    state = ctrl.state_dict()
    state["guard"]["latest_train"] = [math.nan]
    with pytest.raises(ValueError, match="training losses are not finite"):
        ctrl.load_state_dict(state)
