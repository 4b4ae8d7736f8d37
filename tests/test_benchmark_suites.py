"""The held-out suites as a benchmark that can tell tuning from not tuning: the criteria script on
the stored grids, the untuned fixed_default chosen on validation alone, and the extended grid."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import LHOPT, REPO, lhopt_env
from lhopt_cli.commands.baseline_grid import grid_settings, plan
from lhopt_cli.config.compose import compose


def script_path(name: str) -> Path:
    """A script of scripts/ by file name, in whichever group folder holds it."""
    (path,) = (REPO / "scripts").glob(f"*/{name}")
    return path


def script(name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script_path(name)), *args], capture_output=True, text=True,
                          env=lhopt_env(), timeout=timeout)


def load_check_suite():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_suite", REPO / "scripts" / "suites" / "check_suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("suite", ["test", "validation_heldout"])
def test_the_new_held_out_suites_meet_every_criterion_on_their_stored_grids(suite):
    proc = script("check_suite.py", "--suite", suite)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{suite}: all criteria met" in proc.stdout and "NOT met" not in proc.stdout


def test_the_short_test_suite_fails_the_criteria_it_was_replaced_for():
    proc = script("check_suite.py", "--suite", "test_short")
    assert proc.returncode == 1
    for failed in ("[NOT met] 8 tasks of 8 kinds", "[NOT met] steps 175 to 562", "[NOT met] 0 of 8 tasks best at lr <= 1e-3",
                   "[NOT met] 6 of 8 tasks with the best of 35 at the paper grid's edge"):
        assert failed in proc.stdout, proc.stdout


def test_the_criteria_count_what_they_say():
    check = load_check_suite()
    members = OmegaConf.to_container(compose("evaluate", ["suite=test"]).suite)["members"]
    lrs = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    table = pd.DataFrame({"member": [m["id"] for m in members], "kind": [m["task"] for m in members],
                          "steps": [1000] * 12, "cpu_s_per_run": [2.0] * 12,
                          "best_lr": [3e-4] * 4 + [3e-3] * 4 + [1e-2] * 4, "best_lr_35": [3e-4] * 4 + [3e-3] * 8,
                          "extended_lrs": [lrs] * 12})

    def met(start: str) -> bool:
        (value,) = [ok for text, ok in check.criteria("test", table) if text.startswith(start)]
        return value

    assert all(ok for _, ok in check.criteria("test", table))
    table.loc[8:11, "best_lr_35"] = 1e-2  # 4 of 12 at the paper grid's edge: more than a quarter
    assert not met("4 of 12 tasks with the best of 35 at the paper grid's edge")
    table.loc[0:3, "best_lr"] = 3e-3  # no task needs a low lr
    assert not met("0 of 12 tasks best at lr <= 1e-3") and met("12 of 12 tasks best at lr >= 3e-3")
    table.loc[0, "best_lr"] = 1e-1  # the extended grid's edge
    assert not met("no best at the extended grid's edge (at it: fair_tabular)")
    table.loc[0, "steps"] = 400
    assert not met("steps 400 to 1000")
    table.loc[0, "cpu_s_per_run"] = 60.0
    assert not met("at most 60.0 CPU s per run")


@pytest.mark.parametrize("validation, test", [("validation_heldout", "test"), ("validation_heldout_short", "test_short")])
def test_fixed_default_is_what_the_validation_suite_alone_chooses_and_the_test_suite_records_it(validation, test):
    proc = script("choose_fixed_default.py", "--suite", validation, "--top", "3")
    assert proc.returncode == 0, proc.stderr
    recorded = compose("evaluate", [f"suite={test}"]).suite.fixed_default
    assert recorded.chosen_on == validation
    assert f"chosen: lr {recorded.lr:g} {recorded.schedule} (median" in proc.stdout
    assert f"record: fixed_default: {{lr: {recorded.lr:g}, schedule: {recorded.schedule}, chosen_on: {validation}}}" in proc.stdout


def test_choosing_on_a_test_suite_is_refused_in_one_line():
    for suite in ("test", "test_short"):
        proc = script("choose_fixed_default.py", "--suite", suite, timeout=120)
        assert proc.returncode == 1 and proc.stderr.strip() == (
            f"error: --suite {suite}: the test suite is only reported on; choose on validation_heldout")


def test_the_extended_grid_runs_its_extra_lrs_at_fewer_schedules_with_the_same_run_ids():
    settings = grid_settings([1e-3, 1e-2], ["constant", "cosine", "linear"], [1e-5, 1e-2, 1e-1], ["constant", "cosine"])
    assert settings[:6] == [(1e-3, "constant"), (1e-3, "cosine"), (1e-3, "linear"),
                            (1e-2, "constant"), (1e-2, "cosine"), (1e-2, "linear")]
    assert settings[6:] == [(1e-5, "constant"), (1e-5, "cosine"), (1e-1, "constant"), (1e-1, "cosine")]  # 1e-2: already there
    assert len(grid_settings([1e-3], ["constant", "cosine"], [1e-1])) == 4  # no extended schedules: every schedule

    base = ["task=nqm", "seeds=[0,1]", "grid.lrs=[1e-3]", "grid.schedules=[constant,cosine]"]
    extended = plan(compose("baseline_grid", [*base, "grid.extended_lrs=[0.1]", "grid.extended_schedules=[constant]"])).jobs
    full = plan(compose("baseline_grid", [*base[:2], "grid.lrs=[1e-3,0.1]", "grid.schedules=[constant,cosine]"])).jobs
    assert len(extended) == 2 * 3 and {j.run_id for j in extended} < {j.run_id for j in full}  # ids fixed by (seed, lr, schedule)


def test_a_bad_extended_schedule_is_one_line_and_leaves_no_folder(tmp_path):
    proc = subprocess.run([str(LHOPT), "baseline-grid", "debug=smoke", "task=nqm", "grid.extended_lrs=[0.1]",
                           "grid.extended_schedules=[cosine,warp]", f"run_dir={tmp_path / 'r'}"],
                          capture_output=True, text=True, env=lhopt_env(), timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "error: grid.extended_schedules: unknown schedule 'warp'; known: constant, multistep, linear, quadratic, "
        "exponential, cosine, cosine_to_0.1, wsd"]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("override, message", [
    ("fixed_default={lr: -1, schedule: constant, chosen_on: x}", "fixed_default.lr must be positive and finite (got -1)"),
    ("fixed_default={lr: 0.002, schedule: linear}", "fixed_default: lr 0.002 linear is not a setting of the grid"),
    ("fixed_default={lr: 0.003, schedule: bogus}", "fixed_default: lr 0.003 bogus is not a setting of the grid"),
    ("fixed_default={lr: 0.003}", "fixed_default needs both lr and schedule (missing: schedule)"),
    ("extended_lrs=[nan]", "extended_lrs must be positive and finite (got nan)"),
    ("extended_lrs=[inf]", "extended_lrs must be positive and finite (got inf)"),
])
def test_an_untuned_setting_no_grid_runs_is_refused_in_one_line_before_any_folder(tmp_path, override, message):
    proc = subprocess.run([str(LHOPT), "evaluate", "debug=smoke", "tasks=[nqm]", override, f"run_dir={tmp_path / 'r'}"],
                          capture_output=True, text=True, env=lhopt_env(), timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), proc.stderr
    assert not (tmp_path / "r").exists()


def test_no_extended_schedules_means_no_extended_runs():
    base = ["task=nqm", "seeds=[0]", "grid.extended_lrs=[0.1]"]
    assert len(plan(compose("baseline_grid", [*base, "grid.extended_schedules=[]"])).jobs) == 35
    assert len(plan(compose("baseline_grid", [*base, "grid.extended_schedules=null"])).jobs) == 42


@pytest.mark.parametrize("args, message", [
    (["--suite", "train"], "error: suite train lists no tasks"),
    (["--grids", "/nonexistent"], "error: validation_heldout/friedman_regression_wide: no runs in the stored grid"),
    (["--top", "0"], "error: --top must be at least 1 (got 0)"),
])
def test_choose_fixed_default_refuses_what_it_cannot_read_in_one_line(args, message):
    proc = script("choose_fixed_default.py", *args, timeout=120)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(message), proc.stderr
