"""The Controller driving torch's AdamW in a user's own loop."""
import copy

import pytest
import torch
from torch import nn

from lhopt_cli import Controller, PolicyFileError
from lhopt_cli.control.actions import HEAD_NAMES, NO_OP


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
        ctrl.step(loss=loss.item(), valid_loss=valid)
        if on_step:
            on_step(step)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_controller_drives_adamw_in_a_user_loop(smoke_policy):
    net, x, y = user_problem()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ctrl = Controller.from_checkpoint(smoke_policy).attach(opt, total_steps=60, model=net, decisions=8)
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

    def act(self, obs, state, done, greedy, generator):
        self.calls += 1
        action = list(NO_OP)
        if self.calls in (2, 4):
            action[HEAD_NAMES.index("restart")] = 1 if self.calls == 2 else 4  # save / load register 0
        return torch.tensor([action]), state


def test_restart_restores_the_users_model_and_optimizer(smoke_policy):
    net, x, y = user_problem(1)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    ctrl = Controller.from_checkpoint(smoke_policy)
    ctrl.agent = Scripted(ctrl.agent)
    ctrl.attach(opt, total_steps=50, model=net, decisions=4)
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
