"""Suites: train (the family), validation (family instances no PPO update sees), test (kinds the
family never draws); `lhopt evaluate suite=...` runs a whole one."""
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from conftest import LHOPT, REPO, lhopt_env
from lhopt_cli.config.compose import compose
from lhopt_cli.tasks.families import TaskFamily


def suite(name: str) -> dict:
    return OmegaConf.to_container(compose("evaluate", [f"suite={name}"]).suite, resolve=True)


def test_the_test_suite_holds_kinds_the_family_never_draws_and_validation_holds_only_family_kinds():
    family = TaskFamily(OmegaConf.to_container(compose("train_policy", []).task_family, resolve=True))
    test_kinds = [m["task"] for m in suite("test")["members"]]
    assert len(test_kinds) >= 8 and not set(test_kinds) & set(family.names)
    validation = suite("validation")["members"]
    assert 10 <= len(validation) <= 12 and {m["task"] for m in validation} == set(family.names)
    assert len({m["id"] for m in validation}) == len(validation)


def test_the_extended_family_draws_sequence_models_half_the_time_over_the_test_suites_run_lengths():
    import numpy as np

    from lhopt_cli.tasks import build_task

    cfg = OmegaConf.to_container(compose("train_policy", ["task_family=extended"]).task_family, resolve=True)
    family = TaskFamily({**cfg, "eval_points": 25})
    test_kinds = {m["task"] for m in suite("test")["members"]}
    assert not test_kinds & set(family.names) and {"markov_lm", "sequence_classification"} <= set(family.names)
    sequences = {"markov_lm", "sequence_classification", "algorithmic"}
    assert 0.4 <= sum(p for n, p in zip(family.names, family.probs) if n in sequences) <= 0.6
    rng = np.random.default_rng(0)
    drawn = [family.sample(rng) for _ in range(40)]
    steps = [build_task(c).total_steps for c in drawn if c["name"] in ("nqm", "markov_lm", "sequence_classification", "algorithmic")]
    assert min(steps) < 100 and max(steps) > 500  # the test suite's runs are 175 to 562 steps


def test_the_validation_suite_is_what_its_script_samples(tmp_path):
    out = tmp_path / "validation.yaml"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "suites" / "make_validation_suite.py"), "--out", str(out)],
                          capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(out.read_text()) == yaml.safe_load((REPO / "conf" / "suite" / "validation.yaml").read_text())


def test_evaluate_runs_a_whole_suite(run_cli, smoke_policy, tmp_path):
    result = run_cli("evaluate", "debug=smoke", "suite=test", f"policy={smoke_policy}", "seeds=[0]", "extra_baselines=[]",
                     "grid.lrs=[1e-3]", "grid.schedules=[constant]", "extended_lrs=[]", "executor.workers=1",
                     f"run_dir={tmp_path}")
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary.task.unique()) == [m["id"] for m in suite("test")["members"]]
    # AdamW's defaults (lr 1e-3, constant) is a run of this one-setting grid; the oracle its best run
    assert set(summary.method) == {"best_baseline", "lhopt", "adamw_default", "oracle"}
    assert "over the tasks" in result.output and "fixed_default:" in result.output


def test_a_suite_without_tasks_and_no_tasks_are_one_line(tmp_path):
    for args, message in ((["suite=train"], "suite 'train' lists no tasks (the task family 'default')"),
                          (["tasks=[]"], "tasks=[] names no task"),
                          (["suite=smoke", "tasks=[nqm]"], "give either suite=smoke or tasks=[...], not both")):
        proc = subprocess.run([str(LHOPT), "evaluate", "debug=smoke", *args, f"run_dir={tmp_path / 'r'}"],
                              capture_output=True, text=True, env=lhopt_env(), timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines


def reference_grid_jobs(suite_name: str, member: dict):
    """The runs scripts/suites/make_reference_grids.py plans for a suite member (the stored grids' recipe)."""
    import importlib.util

    from lhopt_cli.commands import baseline_grid

    spec = importlib.util.spec_from_file_location("make_reference_grids", REPO / "scripts" / "suites" / "make_reference_grids.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    cfg = compose("evaluate", [f"suite={suite_name}"])
    extended = (list(cfg.extended_lrs), None if cfg.extended_schedules is None else list(cfg.extended_schedules))
    return baseline_grid.plan(script.member_grid_config(member, [0, 1, 2], extended, REPO / "unused", 1, [])).jobs


# runs per member: 3 seeds x (the paper's 5 x 7 + the extended lrs x their schedules)
STORED_RUNS = {"validation": 3 * 7 * 7, "validation_heldout_short": 3 * 7 * 7, "test_short": 3 * 7 * 7,
               "validation_heldout": 3 * (35 + 4 * 3), "test": 3 * (35 + 4 * 3)}


@pytest.mark.parametrize("suite_name", list(STORED_RUNS))
def test_the_stored_reference_grids_hold_every_run_of_every_member(suite_name):
    from lhopt_cli.results.store import ResultsStore

    store = ResultsStore(REPO / "benchmarks" / "grids" / suite_name)
    done = store.finished_ids()
    for member in suite(suite_name)["members"]:
        jobs = reference_grid_jobs(suite_name, member)
        assert len(jobs) == STORED_RUNS[suite_name]
        assert {job.run_id for job in jobs} <= done, f"{suite_name}/{member['id']}: stored grid incomplete"


@pytest.mark.parametrize("suite_name, member_id", [("validation", "mlp_digits_0"), ("validation_heldout_short", "lorenz_forecast_2"),
                                                   ("test_short", "fair_tabular"), ("test", "fair_tabular"),
                                                   ("validation_heldout", "lorenz_forecast_wide")])
def test_a_stored_reference_run_recomputes_to_the_same_curve(suite_name, member_id):
    from lhopt_cli.commands import baseline_grid
    from lhopt_cli.results.store import ResultsStore

    member = next(m for m in suite(suite_name)["members"] if m["id"] == member_id)
    job = next(j for j in reference_grid_jobs(suite_name, member) if (j.lr, j.schedule, j.seed) == (3e-3, "cosine", 1))
    curves = ResultsStore(REPO / "benchmarks" / "grids" / suite_name).curves
    stored = curves[curves.run_id == job.run_id].sort_values("step")
    (run, curve), = baseline_grid.execute([job])  # alone, where the grid may have batched it
    assert run["status"] == "done" and [p["step"] for p in curve] == stored.step.tolist()
    # batching reorders float sums: a thousand steps later, agreement to about 1e-5 (1e-4 allowed)
    assert [p["valid_loss"] for p in curve] == pytest.approx(stored.valid_loss.tolist(), rel=1e-4)
