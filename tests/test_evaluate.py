"""`lhopt evaluate` end to end on a smoke-sized task, and its bad-input handling."""
import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from conftest import LHOPT, lhopt_env
from lhopt_cli.loop.controller import default_policy_path
from lhopt_cli.control.protocol import decision_steps
from lhopt_cli.config.compose import compose
from lhopt_cli.commands.method_runs import EXTRA_BASELINES
from lhopt_cli.results.speedup import speedup
from lhopt_cli.results.store import load


def test_smoke_evaluate_writes_summary_curves_and_figures(run_cli, smoke_policy, tmp_path):
    args = ("evaluate", "debug=smoke", f"policy={smoke_policy}", "tasks=[mlp_mnist]", "seeds=[0]", f"run_dir={tmp_path}")
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary.columns) == ["task", "seed", "method", "final_valid_loss", "speedup", "best_lr", "best_schedule",
                                     "best_at_edge", "speedup_extended", "best_lr_extended"]
    assert set(summary.method) == {"best_baseline", "lhopt", "adamw_default", "fixed_default", "oracle",
                                   *EXTRA_BASELINES}  # every comparator by default
    assert (summary.speedup >= 0).all() and summary.loc[summary.method == "best_baseline", "speedup"].item() == 1.0
    grid = pd.read_parquet(tmp_path / "grid" / "runs.parquet")
    # the extended grid: lrs 1e-5 to 1e-1 at half-decades, those outside the paper's five at 3 schedules
    assert sorted(grid.lr0.unique()) == pytest.approx([1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
    assert len(grid) == 35 + 4 * 3 and set(grid[grid.lr0 > 1.1e-2].schedule) == {"constant", "linear", "cosine"}
    # the untuned choices are grid runs scored like any method; the oracle is the best of them all
    grid_curves = load(tmp_path / "grid")
    paper_curves = [c.sort_values("step").valid_loss.to_numpy() for _, c in grid_curves[grid_curves.lr0 <= 1.1e-2].groupby("run_id")]
    steps = grid_curves.step.drop_duplicates().sort_values().to_numpy()
    fixed = compose("evaluate", ["suite=test"]).suite.fixed_default
    scores = {}
    for (lr, schedule), run in grid_curves.groupby(["lr0", "schedule"]):
        scores[lr, schedule] = speedup(steps, run.sort_values("step").valid_loss.to_numpy(), paper_curves)
    by_method = summary.set_index("method").speedup
    assert by_method["adamw_default"] == pytest.approx(scores[1e-3, "constant"])
    assert by_method["fixed_default"] == pytest.approx(scores[fixed.lr, fixed.schedule])
    assert by_method["oracle"] == pytest.approx(max(scores.values()))
    paper = grid[grid.lr0 <= 1e-2 + 1e-12]
    best = paper.loc[paper.final_valid_loss.idxmin()]
    assert summary.best_lr.iloc[0] == best.lr0 and summary.best_schedule.iloc[0] == best.schedule
    assert summary.best_at_edge.iloc[0] == (best.lr0 in (1e-4, 1e-2))
    assert summary.best_lr_extended.iloc[0] == grid.loc[grid.final_valid_loss.idxmin()].lr0
    assert (summary.speedup_extended <= summary.speedup + 1e-9).all()  # a stronger baseline never flatters
    curves = load(tmp_path)
    assert set(curves.method) == {"lhopt", *EXTRA_BASELINES} and (curves.step.max() == 8)
    decisions = pd.read_csv(tmp_path / "decisions_mlp_mnist_s0.csv")
    assert {"step", "lr", "beta1", "clip", "restart"} <= set(decisions.columns)
    from lhopt_cli.loop.schedule_file import read_schedule  # the run's schedule, replayable elsewhere

    schedule = read_schedule(tmp_path / "schedule_mlp_mnist_s0.json")
    assert schedule["task"] == "mlp_mnist" and schedule["seed"] == 0 and len(schedule["points"]) == len(decisions) + 1
    assert [p["lr"] for p in schedule["points"][1:]] == pytest.approx(decisions.lr.tolist())
    assert schedule["policy_sha256"] == json.loads((tmp_path / "policy.json").read_text())["sha256"]
    for figure in ("curves_mlp_mnist.png", "hyperparameters_mlp_mnist.png"):
        assert (tmp_path / figure).stat().st_size > 10_000

    again = run_cli(*args)  # everything is stored: nothing is rerun, the numbers are the same
    assert again.exit_code == 0 and "policy runs" not in again.output and "nothing to add" in again.output
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "summary.csv"), summary)


def test_reuses_a_grid_from_grid_dir(run_cli, smoke_policy, tmp_path):
    # validated at the points of the policy's protocol (25), as evaluate validates its grid
    grid = run_cli("baseline-grid", "debug=smoke", "task=nqm", "task.eval_points=25", f"run_dir={tmp_path / 'grid'}",
                   "executor.workers=1")
    assert grid.exit_code == 0
    result = run_cli("evaluate", "debug=smoke", f"policy={smoke_policy}", "tasks=[nqm]", "seeds=[0]",
                     f"grid_dir={tmp_path / 'grid'}", "extra_baselines=[]", "extended_lrs=[]", f"run_dir={tmp_path / 'eval'}")
    assert result.exit_code == 0, result.output
    assert "All 35 runs are already done" in result.output
    fixed = compose("evaluate", ["suite=test"]).suite.fixed_default
    in_grid = {"fixed_default"} if fixed.lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2) else set()  # the 5 x 7 grid only
    assert set(pd.read_csv(tmp_path / "eval" / "summary.csv").method) == {"best_baseline", "lhopt", "adamw_default",
                                                                           "oracle"} | in_grid


def test_without_a_policy_argument_the_bundled_policy_runs(run_cli, tmp_path):
    result = run_cli("evaluate", "debug=smoke", "tasks=[nqm]", "seeds=[0]", "extra_baselines=[]",
                     "executor.workers=1", f"run_dir={tmp_path}")
    assert result.exit_code == 0, result.output
    assert f"policy: {default_policy_path()}" in result.output
    assert "lhopt" in set(pd.read_csv(tmp_path / "summary.csv").method)


def test_missing_policy_is_one_line(tmp_path):
    proc = subprocess.run([str(LHOPT), "evaluate", "debug=smoke", f"policy={tmp_path / 'none.pt'}",
                           f"run_dir={tmp_path / 'r'}"], capture_output=True, text=True, env=lhopt_env(), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'none.pt'}: no such policy file"]


def test_evaluate_observes_runs_by_the_policys_protocol(run_cli, policy_with_protocol, tmp_path):
    policy = policy_with_protocol(decisions=5, eval_points=3)
    args = ("evaluate", "debug=smoke", "debug.max_steps=12", f"policy={policy}", "tasks=[nqm]", "seeds=[0]",
            "extra_baselines=[]", "executor.workers=1")
    result = run_cli(*args, f"run_dir={tmp_path}")
    assert result.exit_code == 0, result.output
    curves = load(tmp_path)
    assert sorted(curves.step) == [0, 4, 8, 12]  # the policy's 3 validation points, not the task config's
    grid = load(tmp_path / "grid")
    assert set(grid.groupby("run_id").step.apply(tuple)) == {(0, 4, 8, 12)}  # the grid is compared step for step
    assert len(pd.read_csv(tmp_path / "decisions_nqm_s0.csv")) == 5
    # the engine spaces decisions by the same rule as the Controller: 12 steps, at least 4 apart: 2 decisions
    spaced = policy_with_protocol(decisions=5, eval_points=3, min_interval=4)
    result = run_cli(*args[:3], f"policy={spaced}", *args[4:], f"run_dir={tmp_path / 'spaced'}")
    assert result.exit_code == 0, result.output
    assert pd.read_csv(tmp_path / "spaced" / "decisions_nqm_s0.csv").step.tolist() == decision_steps(12, 5, 4) == [4, 8]


def test_settings_that_contradict_the_policys_protocol_are_refused(run_cli, policy_with_protocol, tmp_path):
    policy = policy_with_protocol(stats_every=4, eval_points=3)
    for setting, message in (("protocol.stats_every=2", "stats_every=2 contradicts the policy's observation protocol"),
                             ("task_overrides=['task.eval_points=7']", "eval_points=7 contradicts"),
                             ("task_overrides=['task.noise=-1']", "task.noise must be finite and non-negative")):
        proc = subprocess.run([str(LHOPT), "evaluate", "debug=smoke", f"policy={policy}", "tasks=[nqm]", setting,
                               f"run_dir={tmp_path / 'r'}"], capture_output=True, text=True, env=lhopt_env(), timeout=120)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
        assert not (tmp_path / "r").exists()  # refused before anything is written: no folder left
    missing = subprocess.run([str(LHOPT), "evaluate", "debug=smoke", f"policy={tmp_path / 'none.pt'}", "tasks=[nqm]",
                              f"run_dir={tmp_path / 'm'}"], capture_output=True, text=True, env=lhopt_env(), timeout=120)
    assert missing.returncode == 1 and "no such policy file" in missing.stderr and not (tmp_path / "m").exists()


def test_a_run_dir_holds_the_runs_of_one_policy(run_cli, smoke_policy, policy_with_protocol, tmp_path):
    args = ("evaluate", "debug=smoke", "tasks=[nqm]", "seeds=[0]", "extra_baselines=[]", "executor.workers=1",
            f"run_dir={tmp_path}")
    assert run_cli(*args, f"policy={smoke_policy}").exit_code == 0
    other = run_cli(*args, f"policy={policy_with_protocol(decisions=2)}")
    assert other.exit_code != 0 and "holds the runs of another policy" in str(other.exception)


def test_a_run_folder_holds_one_policy_acting_one_way(tmp_path, smoke_policy):
    from lhopt_cli.config.compose import ConfigError
    from lhopt_cli.commands.evaluate import claim_run_dir

    claim_run_dir(tmp_path, smoke_policy, greedy=True)
    claim_run_dir(tmp_path, smoke_policy, greedy=True)  # the same policy, the same actions: its runs are reused
    with pytest.raises(ConfigError, match="holds this policy's greedy runs; evaluate greedy=false in another run_dir"):
        claim_run_dir(tmp_path, smoke_policy, greedy=False)
    other = tmp_path / "other.pt"
    other.write_bytes(smoke_policy.read_bytes() + b"x")
    with pytest.raises(ConfigError, match="holds the runs of another policy"):
        claim_run_dir(tmp_path, other, greedy=True)


def test_a_grid_dir_evaluate_adds_runs_to_keeps_its_table_and_heatmap_in_step(run_cli, smoke_policy, tmp_path):
    from lhopt_cli.results.store import ResultsStore

    grid = tmp_path / "grid"
    made = run_cli("baseline-grid", "debug=smoke", "task=nqm", "task.eval_points=25", f"run_dir={grid}",
                   "executor.workers=1")
    assert made.exit_code == 0
    before = pd.read_csv(grid / "grid_table.csv", index_col="lr")
    heatmap = (grid / "grid_heatmap.png").read_bytes()
    result = run_cli("evaluate", "debug=smoke", f"policy={smoke_policy}", "tasks=[nqm]", "seeds=[0,1]",
                     f"grid_dir={grid}", "extra_baselines=[]", "extended_lrs=[0.03]", "extended_schedules=[cosine]",
                     f"run_dir={tmp_path / 'eval'}")
    assert result.exit_code == 0, result.output
    after = pd.read_csv(grid / "grid_table.csv", index_col="lr")
    # the folder's own grid (its config: 5 lrs x 7 schedules), now the median over seeds 0 and 1
    assert list(after.index) == list(before.index) and list(after.columns) == list(before.columns)
    runs = ResultsStore(grid).runs
    mine = runs[(runs.lr0 == after.index[2]) & (runs.schedule == "cosine")]
    assert sorted(mine.seed) == [0, 1] and after.loc[after.index[2], "cosine"] == pytest.approx(
        mine.final_valid_loss.median())
    assert not after.isna().any().any()  # no cell stands for a setting the folder's grid never ran
    assert (grid / "grid_heatmap.png").read_bytes() != heatmap
    log = (grid / "lhopt.log").read_text()
    assert "lhopt evaluate" in log and "runs of nqm" in log and "seeds [0, 1]" in log


def test_a_grid_dir_holding_the_task_at_other_settings_is_said_not_silently_rerun(run_cli, smoke_policy, tmp_path):
    grid = tmp_path / "grid"
    assert run_cli("baseline-grid", "debug=smoke", "task=nqm", f"run_dir={grid}", "executor.workers=1").exit_code == 0
    result = run_cli("evaluate", "debug=smoke", f"policy={smoke_policy}", "tasks=[nqm]", "seeds=[0]",
                     f"grid_dir={grid}", "extra_baselines=[]", "extended_lrs=[]", f"run_dir={tmp_path / 'eval'}")
    assert result.exit_code == 0, result.output
    assert (f"grid_dir {grid}: its nqm runs were made at other task settings (eval_points 4 there, 25 here); "
            "they are not reused") in result.output
