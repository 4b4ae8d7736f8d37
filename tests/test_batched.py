"""The batched engine: member i matches the single-run loop; divergence, restarts, statistics."""
import math

import pytest

from lhopt_cli.config.compose import compose
from lhopt_cli.inner import HParams, Hook, ScheduleHook, train_one_epoch
from lhopt_cli.inner.batched import BatchedRun, train_batched
from lhopt_cli.inner.stats import STAT_NAMES
from lhopt_cli.support.scheduling import BATCHED_BELOW_FLOPS, Plan, chunks, choose
from lhopt_cli.tasks import build_task


def small_task(name, steps=50, *extra):
    overrides = {"mlp_mnist": ["task.valid_size=256"], "nqm": ["task.dim=50"],
                 "char_lm": ["task.max_chars=60000", "task.d_model=32", "task.context=32", "task.valid_size=16"],
                 "mnist1d_conv": ["task.num_train=3200", "task.num_valid=400"],
                 "algorithmic": ["task.cell=lstm", "task.num_train=1600", "task.length=6"]}[name]
    cfg = compose("baseline_grid", [f"task={name}", f"task.max_steps={steps}", "task.eval_points=5",
                                    *overrides, *extra])
    return build_task(cfg.task)


class ChangeAt(ScheduleHook):
    """A cosine schedule whose other hyperparameters change at a given step."""

    def __init__(self, base, at, **changes):
        super().__init__("cosine", base)
        self.at, self.changes = at, changes

    def before_step(self, run):
        super().before_step(run)
        if run.step >= self.at:
            for key, value in self.changes.items():
                setattr(run.hparams, key, value)


class RestartHook(ScheduleHook):
    """Saves weights and optimizer state at `save_at`, restores them at `load_at`."""

    def __init__(self, base, save_at, load_at):
        super().__init__("constant", base)
        self.save_at, self.load_at, self.saved = save_at, load_at, None

    def after_step(self, run, train_loss):
        if run.step == self.save_at:
            self.saved = run.save_state()
        if run.step == self.load_at:
            run.load_state(self.saved)


def members():
    """(seed, hook factory, start hyperparameters) of four differently driven members."""
    return [
        (0, lambda: ScheduleHook("cosine", HParams(lr=1e-3)), HParams(lr=1e-3)),
        (1, lambda: ChangeAt(HParams(lr=3e-3, clip=0.6), 20, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1),
         HParams(lr=3e-3, clip=0.6)),
        (2, lambda: RestartHook(HParams(lr=5e-3), save_at=15, load_at=30), HParams(lr=5e-3)),
        (3, lambda: ScheduleHook("linear", HParams(lr=1e-2, beta1=0.5, clip=0.3)), HParams(lr=1e-2, beta1=0.5, clip=0.3)),
    ]


@pytest.mark.parametrize("name", ["mlp_mnist", "nqm", "char_lm", "mnist1d_conv", "algorithmic"])
def test_each_member_matches_the_single_run_loop(name):
    task = small_task(name)
    spec = members()
    singles = [train_one_epoch(task, seed, make(), hp) for seed, make, hp in spec]
    batched = train_batched(task, [seed for seed, _, _ in spec], [make() for _, make, _ in spec],
                            [hp for _, _, hp in spec])
    for single, member in zip(singles, batched):
        assert member.status == single.status == "done" and member.steps == single.steps == 50
        assert [r["step"] for r in member.curve] == [r["step"] for r in single.curve]
        for a, b in zip(single.curve, member.curve):
            for key in ("valid_loss", "train_loss"):
                if math.isfinite(a[key]):
                    assert abs(b[key] - a[key]) <= 1e-4 * abs(a[key]), (key, a, b)
            for key in ("lr", "beta1", "beta2", "eps", "weight_decay", "clip"):
                assert b[key] == a[key]


def test_restart_really_restores_the_member():
    task = small_task("nqm", 40)
    hook = RestartHook(HParams(lr=0.05), save_at=10, load_at=25)
    run = BatchedRun(task, [0, 1], [hook, ScheduleHook("constant", HParams(lr=0.05))], [HParams(lr=0.05)] * 2)
    run.run()
    saved = hook.saved
    # after the restore the member went on for 15 more steps from the step-10 weights, so its
    # step count is 10 + 15 = 25, while the other member counted all 40
    assert float(saved["steps"][0]) == 10.0
    assert float(run.steps[0][0]) == 25.0 and float(run.steps[1][0]) == 40.0


def test_a_diverging_member_is_frozen_and_the_others_go_on():
    task = small_task("nqm", 40)
    hps = [HParams(lr=0.05), HParams(lr=1e30), HParams(lr=0.01)]
    solo = [train_one_epoch(task, s, ScheduleHook("constant", hp), hp) for s, hp in zip([0, 1, 2], hps)]
    batched = train_batched(task, [0, 1, 2], [ScheduleHook("constant", hp) for hp in hps], hps)
    assert [r.status for r in batched] == ["done", "diverged", "done"]
    assert batched[1].steps < 40 and len(batched[1].curve) >= 2
    assert not math.isfinite(batched[1].final_valid_loss)
    for i in (0, 2):
        assert batched[i].final_valid_loss == pytest.approx(solo[i].final_valid_loss, rel=1e-5)


def test_statistics_are_sampled_every_kth_step_per_member():
    task = small_task("mlp_mnist", 20)

    class Grab(Hook):
        def on_eval(self, run, valid_loss):
            self.stats, self.count = dict(run.stats), run.stats_count

    grabs = [Grab(), Grab()]
    BatchedRun(task, [0, 1], grabs, [HParams(lr=1e-3), HParams(lr=1e-2)], stats_every=4).run()
    for grab in grabs:
        assert grab.count == 5  # steps 0, 4, 8, 12, 16
        assert set(STAT_NAMES) <= set(grab.stats)
        assert all(math.isfinite(v) for v in grab.stats.values())
        assert 0 <= grab.stats["frac_sqrt_v_above_eps"] <= grab.count
        assert -grab.count <= grab.stats["cos_grad_momentum"] <= grab.count
    assert grabs[0].stats["update_norm"] != grabs[1].stats["update_norm"]


def test_member_weights_can_be_read_as_a_model_state_dict():
    task = small_task("mlp_mnist", 5)
    run = BatchedRun(task, [0, 1], hparams=[HParams(lr=1e-3)] * 2)
    run.run()
    model = task.make_model(0)
    model.load_state_dict(run.member_state_dict(1))
    assert task.valid_loss(model) == pytest.approx(run.valid_losses()[1], rel=1e-5)


def test_chunks_are_even_and_depend_on_the_runs_and_size_alone():
    assert [len(c) for c in chunks(list(range(35)), 32)] == [18, 17]
    sizes = [len(c) for c in chunks(list(range(35)), 8)]
    assert len(sizes) == 5 and sum(sizes) == 35 and max(sizes) - min(sizes) <= 1
    assert sum(chunks(list(range(105)), 8), []) == list(range(105))
    assert sum(chunks(list(range(7)), 1), []) == list(range(7))
    assert [len(c) for c in chunks(list(range(3)), 32)] == [3]


def test_choose_decides_the_path_by_a_rule_on_the_task_and_the_chunks_without_the_workers():
    small, large = small_task("nqm", 200), small_task("char_lm", 20)
    assert small.flops_per_step < BATCHED_BELOW_FLOPS < large.flops_per_step
    for workers in (1, 2, 4):  # the path and the chunk size never depend on the workers or a timing
        plans = choose(small, 35, workers, "auto", 32), choose(large, 35, workers, "auto", 32)
        assert [(p.path, p.members) for p in plans] == [("batched", 18), ("single", 1)]
    assert choose(small, 35, 1, "single", 32) == Plan("single", 1, 1)
    assert choose(small, 35, 1, "batched", 8) == Plan("batched", 7, 1)
    assert choose(small, 35, 2, "batched", 8) == Plan("batched", 7, 2)  # a named path: the workers asked for
    plan = choose(small, runs=35, workers=2, path="auto", max_members=32)
    assert plan.workers == 1 and "measured on 1 thread" in plan.note  # seconds of work: no worker processes
