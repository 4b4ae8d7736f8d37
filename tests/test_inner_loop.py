"""The inner loop on real tasks: hooks set AdamW's hyperparameters, clipping, divergence, restarts."""
from __future__ import annotations

import math

import pytest
import torch

from lhopt_cli.config.compose import compose
from lhopt_cli.inner import HParams, Hook, RunContext, ScheduleHook, train_one_epoch
from lhopt_cli.inner.optim import RollingMaxClipper, apply_hparams, make_adamw
from lhopt_cli.tasks import build_task


def nqm(*more: str):
    cfg = compose("baseline_grid", ["task=nqm", "task.dim=20", "task.steps=40", "task.eval_points=5", *more])
    return build_task(cfg.task)


@pytest.fixture(scope="module")
def nqm_task():
    return nqm()  # 40 steps, validation at 8, 16, 24, 32, 40


@pytest.fixture(scope="module")
def mlp_task():
    cfg = compose("baseline_grid", ["task=mlp_mnist", "task.hidden=[32]", "task.max_steps=40", "task.eval_points=4", "task.valid_size=256"])
    return build_task(cfg.task)


def group_hparams(optimizer) -> list[tuple]:
    return [(g["lr"], tuple(g["betas"]), g["eps"], g["weight_decay"]) for g in optimizer.param_groups]


class SetAt(Hook):
    """Sets `hparams` before step `at`; records what every step's param groups held."""

    def __init__(self, at: int, hparams: HParams):
        self.at, self.hparams = at, hparams
        self.groups: list[list[tuple]] = []

    def before_step(self, run) -> None:
        if run.step == self.at:
            run.hparams = self.hparams

    def after_step(self, run, train_loss: float) -> None:
        self.groups.append(group_hparams(run.optimizer))


def test_hook_hparams_land_in_param_groups_at_that_step(mlp_task):
    start = HParams(lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)
    new = HParams(lr=7e-4, beta1=0.5, beta2=0.9, eps=1e-5, weight_decay=0.3)
    hook = SetAt(13, new)
    result = train_one_epoch(mlp_task, seed=0, hook=hook, hparams=start)
    assert result.status == "done" and result.steps == 40
    assert len(hook.groups) == 40
    before = (start.lr, (start.beta1, start.beta2), start.eps, start.weight_decay)
    after = (new.lr, (new.beta1, new.beta2), new.eps, new.weight_decay)
    for step, groups in enumerate(hook.groups):
        assert groups, "no param groups"
        expected = before if step < 13 else after
        assert all(g == expected for g in groups), (step, groups)
    # the curve records the hyperparameters in force at each validation point
    for row in result.curve:
        hp = start if row["step"] <= 13 else new
        assert (row["lr"], row["beta1"], row["beta2"], row["eps"], row["weight_decay"]) == (
            hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay)


class FreezeAt(Hook):
    """lr = 0 and weight decay = 0 at one step: AdamW must leave the weights exactly as they were."""

    def __init__(self, at: int):
        self.at = at
        self.deltas: dict[int, float] = {}

    def before_step(self, run) -> None:
        run.hparams = HParams(lr=0.0 if run.step == self.at else 1e-2, weight_decay=0.0 if run.step == self.at else 0.01)
        self.snapshot = [p.detach().clone() for p in run.model.parameters()]

    def after_step(self, run, train_loss: float) -> None:
        delta = max(float((p.detach() - s).abs().max()) for p, s in zip(run.model.parameters(), self.snapshot))
        self.deltas[run.step - 1] = delta


def test_lr_zero_at_one_step_freezes_that_step_only(nqm_task):
    hook = FreezeAt(20)
    train_one_epoch(nqm_task, seed=0, hook=hook)
    assert hook.deltas[20] == 0.0
    assert all(delta > 0.0 for step, delta in hook.deltas.items() if step != 20)


class ClipRecorder(Hook):
    def __init__(self):
        self.clipped: list[bool] = []
        self.pre: list[float] = []
        self.post: list[float] = []
        self.thresholds: list[float] = []

    def after_step(self, run, train_loss: float) -> None:
        grads = [p.grad for p in run.model.parameters() if p.grad is not None]
        self.clipped.append(run.clipped)
        self.pre.append(run.grad_norm)
        self.post.append(float(torch.nn.utils.get_total_norm(grads)))
        self.thresholds.append(run.hparams.clip * run.clipper.rolling_max)


@pytest.fixture(scope="module")
def clip_half_run(mlp_task):
    hook = ClipRecorder()
    result = train_one_epoch(mlp_task, seed=0, hook=ScheduleHookWith(hook, HParams(lr=3e-3, clip=0.5)))
    return result, hook


def test_clip_below_one_reports_clipped_steps(clip_half_run):
    result, hook = clip_half_run
    assert result.status == "done"
    assert len(hook.clipped) == 40
    assert any(hook.clipped)
    rolling = 0.0
    for clipped, pre, threshold in zip(hook.clipped, hook.pre, hook.thresholds):
        rolling = max(0.99 * rolling, pre)  # the rolling max decays 0.99 per step
        assert threshold == pytest.approx(0.5 * rolling, rel=1e-6)
        assert clipped == (pre > threshold)
    assert all(row["clip"] == 0.5 for row in result.curve[1:])


def test_clip_below_one_bounds_the_gradient_norm(clip_half_run):
    _, hook = clip_half_run
    for clipped, pre, post, threshold in zip(hook.clipped, hook.pre, hook.post, hook.thresholds):
        assert post <= threshold * (1 + 1e-5) + 1e-7
        if clipped:
            assert post == pytest.approx(threshold, rel=1e-4)
        else:
            assert post == pytest.approx(pre, rel=1e-5)


def test_clip_one_never_clips(mlp_task):
    hook = ClipRecorder()
    train_one_epoch(mlp_task, seed=0, hook=ScheduleHookWith(hook, HParams(lr=3e-3, clip=1.0)))
    assert len(hook.clipped) == 40
    assert not any(hook.clipped)
    assert all(post == pytest.approx(pre, rel=1e-5) for pre, post in zip(hook.pre, hook.post))


class ScheduleHookWith(ScheduleHook):
    """A constant schedule at `base` that forwards after_step to another hook."""

    def __init__(self, inner: Hook, base: HParams):
        super().__init__("constant", base)
        self.inner = inner

    def after_step(self, run, train_loss: float) -> None:
        self.inner.after_step(run, train_loss)


def test_huge_lr_diverges_and_keeps_curve():
    task = nqm()
    result = train_one_epoch(task, seed=0, hparams=HParams(lr=1e30))
    assert result.status == "diverged"
    assert 0 < result.steps < task.total_steps
    assert len(result.curve) >= 2
    assert math.isfinite(result.curve[0]["valid_loss"])
    assert not math.isfinite(result.curve[-1]["valid_loss"])
    assert result.curve[-1]["step"] == result.steps
    assert not math.isfinite(result.final_valid_loss)


def test_lr_blown_up_mid_run_diverges_at_the_next_step(nqm_task):
    hook = SetAt(10, HParams(lr=1e30))
    result = train_one_epoch(nqm_task, seed=0, hook=hook, hparams=HParams(lr=0.05))
    assert result.status == "diverged"
    assert result.steps == 11  # step 10 blew the weights up; step 11's training loss is not finite
    assert [row["step"] for row in result.curve] == [0, 8, 11]
    assert all(math.isfinite(row["valid_loss"]) for row in result.curve[:-1])
    assert not math.isfinite(result.curve[-1]["valid_loss"])
    assert not math.isfinite(result.curve[-1]["train_loss"])


def test_divergence_seen_at_a_validation_point(nqm_task):
    hook = SetAt(15, HParams(lr=1e30))  # the update of step 15 is followed by validation at 16
    result = train_one_epoch(nqm_task, seed=0, hook=hook, hparams=HParams(lr=0.05))
    assert result.status == "diverged"
    assert result.steps == 16 < nqm_task.total_steps
    assert [row["step"] for row in result.curve] == [0, 8, 16]
    assert not math.isfinite(result.curve[-1]["valid_loss"])
    assert math.isfinite(result.curve[-2]["valid_loss"])


class SaveRestore(Hook):
    """Saves the state after step `save`, trains on, restores it after step `load`."""

    def __init__(self, save: int, load: int):
        self.save, self.load = save, load
        self.state = None
        self.report: dict = {}

    def after_step(self, run, train_loss: float) -> None:
        if run.step == self.save:
            self.state = run.save_state()
            self.weights = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
            self.opt = run.optimizer.state_dict()
            self.opt_tensors = {(i, k): v.detach().clone() for i, s in self.opt["state"].items() for k, v in s.items()}
            self.rolling_max = run.clipper.rolling_max
        elif run.step == self.load:
            self.report["changed"] = any(not torch.equal(v, run.model.state_dict()[k]) for k, v in self.weights.items())
            self.report["state_untouched"] = all(torch.equal(self.state["model"][k], v) for k, v in self.weights.items())
            run.load_state(self.state)
            restored = run.model.state_dict()
            self.report["weights_equal"] = all(torch.equal(restored[k], v) for k, v in self.weights.items())
            opt = run.optimizer.state_dict()
            self.report["opt_equal"] = all(
                torch.equal(opt["state"][i][k].cpu(), v.cpu()) for (i, k), v in self.opt_tensors.items()
            ) and set(opt["state"]) == set(self.opt["state"])
            self.report["rolling_max"] = run.clipper.rolling_max == self.rolling_max
            # the model keeps training after the restore from the restored weights
            self.report["params_are_optimized"] = all(
                any(p is q for q in run.optimizer.param_groups[0]["params"]) for p in run.model.parameters()
            )


@pytest.mark.parametrize("which", ["nqm", "mlp"])
def test_save_state_load_state_round_trip(nqm_task, mlp_task, which):
    task = nqm_task if which == "nqm" else mlp_task
    hook = SaveRestore(save=5, load=12)
    result = train_one_epoch(task, seed=0, hook=hook, hparams=HParams(lr=1e-2, clip=0.8))
    assert result.status == "done" and result.steps == task.total_steps
    assert hook.state is not None
    assert hook.report == {
        "changed": True,
        "state_untouched": True,
        "weights_equal": True,
        "opt_equal": True,
        "rolling_max": True,
        "params_are_optimized": True,
    }


def test_restore_then_same_steps_reproduce_the_trajectory(nqm_task):
    """Restoring the state at step k and replaying the same batches gives bit-identical weights."""
    model = nqm_task.make_model(0)
    hp = HParams(lr=1e-2, clip=0.7)
    params = [p for p in model.parameters() if p.requires_grad]
    run = RunContext(0, nqm_task.total_steps, model, make_adamw(params, hp), hp, RollingMaxClipper())
    batches = list(nqm_task.train_batches(0))

    def step(batch):
        apply_hparams(run.optimizer, run.hparams)
        loss = nqm_task.loss(model, batch)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.grad_norm, run.clipped = run.clipper(params, run.hparams.clip)
        run.optimizer.step()

    for batch in batches[:5]:
        step(batch)
    saved = run.save_state()
    for batch in batches[5:10]:
        step(batch)
    first = model.x.detach().clone()
    run.load_state(saved)
    for batch in batches[5:10]:
        step(batch)
    assert torch.equal(model.x.detach(), first)


def test_first_curve_row_shows_the_hyperparameters_of_the_first_step(nqm_task):
    result = train_one_epoch(nqm_task, seed=0, hook=ScheduleHook("cosine", HParams(lr=0.05)))
    assert result.curve[0]["step"] == 0 and result.curve[0]["lr"] == pytest.approx(0.05)
