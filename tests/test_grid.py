"""The baseline grid end to end: results store, resume, a killed run, parallel workers, outputs."""
import math
import signal
import subprocess
import time

import pandas as pd
import pytest

from conftest import LHOPT, lhopt_env
from lhopt_cli.results.store import CURVE_COLUMNS, RUN_COLUMNS, ResultsStore, StoreError, load


def _grid(run_cli, run_dir, *extra):
    result = run_cli("baseline-grid", "debug=smoke", "task=mlp_mnist", "executor.workers=1", f"run_dir={run_dir}", *extra)
    assert result.exit_code == 0, result.output
    return result


def test_smoke_grid_writes_35_done_runs_then_adds_nothing(run_cli, tmp_path):
    run_dir = tmp_path / "grid"
    _grid(run_cli, run_dir)
    runs = pd.read_parquet(run_dir / "runs.parquet")
    curves = pd.read_parquet(run_dir / "results.parquet")
    assert list(runs.columns) == RUN_COLUMNS and list(curves.columns) == CURVE_COLUMNS
    assert len(runs) == 35 and runs.run_id.is_unique and set(runs.status) == {"done"}
    assert set(zip(runs.lr0, runs.schedule)) == {(lr, s) for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2) for s in
        ("constant", "multistep", "linear", "quadratic", "exponential", "cosine", "cosine_to_0.1")}
    # every run has its curve: step 0 plus the eval points, the last at the end of the run
    per_run = curves.groupby("run_id").step.agg(["min", "max", "count"])
    assert set(per_run.index) == set(runs.run_id)
    assert (per_run["min"] == 0).all() and (per_run["max"] == runs.total_steps.iloc[0]).all()
    assert (per_run["count"] == 5).all()  # step 0 + debug=smoke's 4 eval points
    assert (curves.flops > 0).sum() == len(curves) - 35 and (curves.model_params == 101770).all()
    # the lr column follows the schedule: linear decay reaches lr0 * (1 - p) at the last step taken
    linear = curves[(curves.schedule == "linear") & (curves.lr0 == 1e-2)].sort_values("step")
    total = linear.total_steps.iloc[0]
    assert linear.lr.iloc[-1] == pytest.approx(1e-2 * (1 - (total - 1) / total))
    table = pd.read_csv(run_dir / "grid_table.csv", index_col="lr")
    assert table.shape == (5, 7)
    assert (run_dir / "grid_heatmap.png").stat().st_size > 5000
    assert (run_dir / "config.yaml").exists()

    again = _grid(run_cli, run_dir)
    assert "nothing to add" in again.output
    assert len(pd.read_parquet(run_dir / "runs.parquet")) == 35
    assert len(pd.read_parquet(run_dir / "results.parquet")) == len(curves)


def test_resume_runs_only_what_is_missing(run_cli, tmp_path):
    run_dir = tmp_path / "grid"
    _grid(run_cli, run_dir, "grid.lrs=[1e-3]")
    first = pd.read_parquet(run_dir / "results.parquet")
    assert len(pd.read_parquet(run_dir / "runs.parquet")) == 7
    result = _grid(run_cli, run_dir)
    assert "7 of 35 runs already done, 28 to go" in result.output
    runs = pd.read_parquet(run_dir / "runs.parquet")
    assert len(runs) == 35 and runs.run_id.is_unique
    after = pd.read_parquet(run_dir / "results.parquet")
    kept = after[after.run_id.isin(first.run_id)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, first.reset_index(drop=True))  # nothing written is lost or redone


def test_killed_grid_loses_nothing_and_resumes(tmp_path):
    run_dir = tmp_path / "grid"
    cmd = [str(LHOPT), "baseline-grid", "debug=smoke", "task=mlp_mnist", "task.max_steps=60",
           "executor.workers=1", f"run_dir={run_dir}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=lhopt_env())
    runs_path = run_dir / "runs.parquet"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:  # pyarrow opens the path more than once: a table replaced in between reads as garbage
            if runs_path.exists() and len(pd.read_parquet(runs_path)) >= 3:
                break
        except OSError:
            pass  # replaced mid-read by the next atomic write; read it again
        time.sleep(0.02)
    assert proc.poll() is None, "the grid finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = pd.read_parquet(runs_path)
    assert 3 <= len(before) < 35
    done = subprocess.run(cmd, capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(before)} of 35 runs already done" in done.stdout
    runs = pd.read_parquet(runs_path)
    assert len(runs) == 35 and runs.run_id.is_unique and set(runs.status) == {"done"}
    assert set(before.run_id) <= set(runs.run_id)
    curves = load(run_dir)
    assert set(curves.run_id) == set(runs.run_id)


def test_parallel_workers_match_in_process_results(run_cli, tmp_path):
    small = ("grid.lrs=[1e-3,1e-2]", "grid.schedules=[constant,cosine]", "seeds=[0,1]")
    _grid(run_cli, tmp_path / "serial", *small)
    result = run_cli("baseline-grid", "debug=smoke", "task=mlp_mnist", "executor.workers=2",
                     f"run_dir={tmp_path / 'parallel'}", *small)
    assert result.exit_code == 0, result.output
    serial = pd.read_parquet(tmp_path / "serial" / "runs.parquet").set_index("run_id").sort_index()
    parallel = pd.read_parquet(tmp_path / "parallel" / "runs.parquet").set_index("run_id").sort_index()
    assert len(serial) == 8
    pd.testing.assert_series_equal(serial.final_valid_loss, parallel.final_valid_loss, rtol=1e-5)


def test_diverging_runs_are_marked_and_kept(run_cli, tmp_path):
    run_dir = tmp_path / "grid"
    _grid(run_cli, run_dir, "task=nqm", "task.condition=10", "grid.lrs=[1e-3,1e6]", "grid.schedules=[constant]",
          "grid.beta1=0.0", "task.max_steps=40")
    runs = pd.read_parquet(run_dir / "runs.parquet").set_index("lr0")
    assert runs.loc[1e-3, "status"] == "done"
    assert runs.loc[1e6, "status"] == "diverged" and runs.loc[1e6, "steps"] < 40
    curve = load(run_dir).query("lr0 == 1e6")
    assert len(curve) >= 2 and not math.isfinite(curve.valid_loss.iloc[-1])
    table = pd.read_csv(run_dir / "grid_table.csv", index_col="lr")
    assert math.isnan(table.loc[1e6, "constant"])


def test_a_damaged_results_file_is_refused_with_one_line(tmp_path, run_cli):
    run_dir = tmp_path / "grid"
    run_dir.mkdir()
    (run_dir / "runs.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(StoreError, match="damaged or not a Parquet table"):
        ResultsStore(run_dir)
    proc = subprocess.run([str(LHOPT), "baseline-grid", "debug=smoke", f"run_dir={run_dir}"],
                          capture_output=True, text=True, env=lhopt_env(), timeout=120)
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and "damaged or not a Parquet table" in proc.stderr


def test_batched_and_single_paths_give_the_same_grid(run_cli, tmp_path):
    small = ("grid.lrs=[1e-3,1e-2]", "seeds=[0,1]")
    tables = {}
    for path in ("single", "batched"):
        _grid(run_cli, tmp_path / path, f"executor.path={path}", *small)
        tables[path] = pd.read_parquet(tmp_path / path / "runs.parquet").set_index("run_id").sort_index()
        curves = pd.read_parquet(tmp_path / path / "results.parquet")
        assert list(curves.columns) == CURVE_COLUMNS and len(curves) == 28 * 5
    single, batched = tables["single"], tables["batched"]
    assert list(single.index) == list(batched.index) and len(single) == 28
    assert (single.status == batched.status).all()
    pd.testing.assert_series_equal(single.final_valid_loss, batched.final_valid_loss, rtol=1e-4)


def test_unknown_executor_path_is_refused(run_cli, tmp_path):
    result = run_cli("baseline-grid", "debug=smoke", "executor.path=gpu", f"run_dir={tmp_path / 'x'}")
    assert result.exit_code != 0


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_keeps_finished_runs_and_says_how_to_resume(tmp_path, workers):
    run_dir = tmp_path / "grid"
    cmd = [str(LHOPT), "baseline-grid", "debug=smoke", "task=mlp_mnist", "task.max_steps=60",
           f"executor.workers={workers}", "executor.path=single", f"run_dir={run_dir}"]
    # a shell that started this suite in the background may have set SIGINT to ignored: undo that
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=lhopt_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "runs.parquet").exists():
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the grid finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("interrupted: finished work is saved")
    assert "Traceback" not in err
    assert len(pd.read_parquet(run_dir / "runs.parquet")) >= 1
