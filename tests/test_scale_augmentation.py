"""Scale augmentation (task.param_scale, task_family.param_scale): a network trained through
w = s * w' learns what it learned before, with its best AdamW learning rate moved by 1/s."""
import math

import numpy as np
import pytest
import torch

from lhopt_cli.inner import HParams, train_one_epoch
from lhopt_cli.inner.batched import BatchedRun
from lhopt_cli.inner.schedules import ScheduleHook
from lhopt_cli.tasks import build_task
from lhopt_cli.tasks.families import FamilyError, TaskFamily

DIGITS = {"name": "mlp_digits", "hidden": [32], "activation": "tanh", "norm": "none", "batch_size": 16, "eval_points": 5}


def plain_adam(lr: float) -> HParams:
    return HParams(lr=lr, weight_decay=0.0, eps=1e-12)  # no decay, eps negligible: the map is exact


def test_the_rescaled_network_computes_the_same_function_at_the_start():
    plain, scaled = build_task(DIGITS), build_task({**DIGITS, "param_scale": 100.0})
    x = plain.x_valid[:8]
    a, b = plain.make_model(3), scaled.make_model(3)
    torch.testing.assert_close(b(x), a(x))
    # the optimizer's variables are w / s
    w, w_scaled = next(a.parameters()), next(b.parameters())
    torch.testing.assert_close(w_scaled * 100.0, w)


@pytest.mark.parametrize("engine", ["single", "batched"])
def test_lr_over_s_at_scale_s_is_the_unscaled_run_at_lr(engine):
    plain, scaled = build_task(DIGITS), build_task({**DIGITS, "param_scale": 10.0})

    def curve(task, lr):
        if engine == "single":
            result = train_one_epoch(task, 0, ScheduleHook("cosine", plain_adam(lr)), plain_adam(lr))
        else:
            result = BatchedRun(task, [0, 1], [ScheduleHook("cosine", plain_adam(lr)) for _ in range(2)],
                                [plain_adam(lr)] * 2).run()[0]
        return [point["valid_loss"] for point in result.curve]

    reference = curve(plain, 1e-3)
    assert curve(scaled, 1e-4) == pytest.approx(reference, rel=1e-4)
    assert curve(scaled, 1e-3) != pytest.approx(reference, rel=1e-2)  # the same lr is a 10x larger step


def test_the_best_lr_of_a_sweep_moves_by_one_over_s():
    """AdamW's defaults (weight decay 0.01, eps 1e-8) included: the best of a half-decade sweep
    moves by exactly 1/s."""
    lrs = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]

    def best_lr(task, scale):
        finals = []
        for lr in lrs:
            hp = HParams(lr=lr / scale)
            finals.append(train_one_epoch(task, 0, ScheduleHook("cosine", hp), hp).curve[-1]["valid_loss"])
        return lrs[int(np.argmin(finals))] / scale, finals

    best_plain, finals_plain = best_lr(build_task(DIGITS), 1.0)
    best_scaled, finals_scaled = best_lr(build_task({**DIGITS, "param_scale": 0.1}), 0.1)
    assert best_scaled == pytest.approx(best_plain / 0.1)
    assert finals_scaled == pytest.approx(finals_plain, rel=0.1)  # decay and eps differ a little


def test_a_family_gives_each_instance_its_own_scale_and_a_family_without_one_samples_as_before():
    kinds = {"kinds": {"nqm": {"dim": [10, 100], "batch_size": [8, 64]}, "mlp_digits": {"depth": [1, 2]}}}
    before = [TaskFamily(kinds).sample(np.random.default_rng(5)) for _ in range(1)]
    assert "param_scale" not in before[0]
    assert TaskFamily({**kinds, "param_scale": None}).sample(np.random.default_rng(5)) == before[0]
    family = TaskFamily({**kinds, "param_scale": [0.01, 100.0]})
    rng = np.random.default_rng(0)
    drawn = [family.sample(rng) for _ in range(400)]
    scales = np.log10([c["param_scale"] for c in drawn])
    assert scales.min() >= -2 and scales.max() <= 2 and abs(np.median(scales)) < 0.3  # log-uniform
    assert (scales < -1).mean() > 0.15 and (scales > 1).mean() > 0.15
    # the rest of the config is drawn as before: the scale comes last
    assert {k: v for k, v in family.sample(np.random.default_rng(5)).items() if k != "param_scale"} == before[0]
    assert TaskFamily({**kinds, "param_scale": 3.0}).sample(np.random.default_rng(1))["param_scale"] == 3.0


@pytest.mark.parametrize("bad", [[0.0, 10.0], [-1.0], [3.0], "big", [1.0, math.inf], [1.0, 2.0, 3.0]])
def test_a_bad_family_scale_is_one_line(bad):
    with pytest.raises(FamilyError, match=r"^task_family.param_scale must be null, a positive number"):
        TaskFamily({"kinds": {"nqm": {}}, "param_scale": bad})


@pytest.mark.parametrize("bad", [0.0, -2.0, math.nan, math.inf])
def test_a_bad_task_scale_is_refused(bad):
    with pytest.raises(ValueError, match="task.param_scale must be a finite positive number"):
        build_task({**DIGITS, "param_scale": bad}).make_model(0)


def test_the_reference_sweep_follows_the_instance_scale():
    from lhopt_cli.control.reference import ReferenceSweep

    sweep = ReferenceSweep((1e-3, 1e-2), ("cosine",))
    task = {**DIGITS, "batch_size": 64}
    steps, plain = sweep.curves(build_task(task), 0)
    steps_scaled, scaled = sweep.curves(build_task({**task, "param_scale": 100.0}), 0)
    assert steps_scaled == steps
    for a, b in zip(plain, scaled):  # lr / s at scale s: the same curves, decay and eps aside
        assert b == pytest.approx(a, rel=0.02)
