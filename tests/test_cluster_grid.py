"""`lhopt baseline-grid --multirun` on real Hydra launchers: joblib and submitit's local executor.

Jobs (grid chunks) share one run folder through shards of the results store; a worker killed
mid-grid loses no finished run and a rerun of the same sweep completes the grid.
"""
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import LHOPT, lhopt_env
from lhopt_cli.results.store import ResultsStore


def sweep(tmp_path: Path, launcher: str, *extra: str) -> list[str]:
    return [str(LHOPT), "baseline-grid", "--multirun", "task=nqm", "debug=smoke", "chunks=3", "chunk=0,1,2",
            "executor.workers=1", f"run_dir={tmp_path / 'grid'}", f"hydra/launcher={launcher}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", *extra]


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_a_sweep_of_grid_chunks_fills_one_store(tmp_path, launcher):
    proc = subprocess.run(sweep(tmp_path, launcher), capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shards = sorted(p.name for p in (tmp_path / "grid" / "shards").iterdir())
    assert len(shards) == 3 and all(name.endswith(f"c{i}of3") for i, name in enumerate(shards))
    ids = [set(pd.read_parquet(tmp_path / "grid" / "shards" / s / "runs.parquet").run_id) for s in shards]
    assert [len(i) for i in ids] == [12, 12, 11] and not (ids[0] & ids[1]) and not (ids[1] & ids[2])
    store = ResultsStore(tmp_path / "grid")
    assert len(store.finished_ids()) == 35 and set(store.curves.run_id) == set.union(*ids)

    # the whole grid, read back by a plain `lhopt baseline-grid` on the same folder: nothing reruns
    table = subprocess.run([str(LHOPT), "baseline-grid", "task=nqm", "debug=smoke", "executor.workers=1",
                            f"run_dir={tmp_path / 'grid'}"], capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert table.returncode == 0 and "All 35 runs are already done" in table.stdout
    grid = pd.read_csv(tmp_path / "grid" / "grid_table.csv", index_col="lr")
    assert grid.shape == (5, 7) and grid.notna().all().all()
    again = subprocess.run(sweep(tmp_path, launcher), capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert again.returncode == 0  # the same sweep again: every job finds its runs done, reruns none
    pd.testing.assert_frame_equal(ResultsStore(tmp_path / "grid").runs, store.runs)


def _descendants(pid: int) -> list[int]:
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_a_worker_killed_mid_sweep_loses_nothing_and_the_rerun_completes(tmp_path):
    # one chunk, full-length mlp_mnist runs stored one at a time: slow enough to kill mid-way
    cmd = [str(LHOPT), "baseline-grid", "--multirun", "task=mlp_mnist", "chunks=1", "chunk=0", "executor.workers=1",
           "executor.path=single", f"run_dir={tmp_path / 'grid'}", "hydra/launcher=joblib",
           f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=lhopt_env(),
                            start_new_session=True)
    runs_path = None
    deadline = time.time() + 180
    def runs_recorded(path) -> int:
        try:  # pyarrow opens the file twice: a rename between the two reads tears this poll, not the file
            return len(pd.read_parquet(path))
        except OSError:
            return 0

    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "grid").glob("shards/*/runs.parquet"))
        if found and runs_recorded(found[0]) >= 3:
            runs_path = found[0]
            break
        time.sleep(0.05)
    assert runs_path is not None and proc.poll() is None, "the sweep ended before a worker could be killed"
    workers = _descendants(proc.pid)
    assert workers
    for pid in workers:  # the joblib (loky) worker running the job dies without any cleanup
        os.kill(pid, signal.SIGKILL)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode != 0, output
    before = pd.read_parquet(runs_path)
    assert 3 <= len(before) < 35

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(before)} of 35 runs already done" in rerun.stdout
    runs = ResultsStore(tmp_path / "grid").runs
    assert len(runs) == 35 and set(runs.status) == {"done"}
    kept = runs.set_index("run_id").loc[before.run_id, ["final_valid_loss", "wall_s"]]
    pd.testing.assert_frame_equal(kept, before.set_index("run_id")[["final_valid_loss", "wall_s"]])


@pytest.mark.parametrize("command", ["baseline-grid", "evaluate"])
def test_the_ray_executor_is_refused_for_grids_in_one_line(tmp_path, command):
    proc = subprocess.run([str(LHOPT), command, "debug=smoke", "executor=ray", f"run_dir={tmp_path}"],
                          capture_output=True, text=True, env=lhopt_env(), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "--multirun" in proc.stderr, proc.stderr


@pytest.mark.parametrize("bad", ["hydra/launcher=nonexistent", "chunk=0,5", "task=nqm,nope"])
def test_a_bad_sweep_is_one_line_before_any_job_starts(tmp_path, bad):
    proc = subprocess.run([str(LHOPT), "baseline-grid", "-m", "task=nqm", "debug=smoke", "chunks=2", bad,
                           f"run_dir={tmp_path / 'grid'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          capture_output=True, text=True, env=lhopt_env(), timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "grid").exists() and not (tmp_path / "sweep").exists()
