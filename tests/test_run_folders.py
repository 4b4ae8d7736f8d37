"""Run folders that nothing corrupts: concurrent commands, damaged files, a file system that says no."""
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager

import pandas as pd
import pytest
import torch

from conftest import LHOPT, lhopt_env
from lhopt_cli.commands.cli import main
from lhopt_cli.results.store import RUN_COLUMNS, ResultsStore, StoreError, _read

GRID = ["baseline-grid", "debug=smoke", "task=nqm"]


def lhopt(*args, cwd=None, timeout=600):
    return subprocess.run([str(LHOPT), *args], capture_output=True, text=True, env=lhopt_env(), timeout=timeout, cwd=cwd)


def one_error_line(proc) -> str:
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


def in_process_error(monkeypatch, capsys, *argv) -> str:
    monkeypatch.setattr(sys, "argv", ["lhopt", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# --- concurrent commands ---------------------------------------------------------------------
HOLDER = """
import sys, time
from pathlib import Path
from lhopt_cli.results.locks import folder_lock
with folder_lock(Path(sys.argv[1]), "lhopt baseline-grid (test holder)"):
    print("held", flush=True)
    time.sleep(600)
"""


@contextmanager
def held_elsewhere(folder):
    """`folder`'s lock held by another process for the body, which is then killed with -9."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                              env=lhopt_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the operating system drops its lock
        holder.wait()


def test_a_second_command_is_refused_naming_the_holder_and_a_killed_holder_blocks_nothing(tmp_path):
    run_dir = tmp_path / "grid"
    run_dir.mkdir()
    with held_elsewhere(run_dir) as holder:
        line = one_error_line(lhopt(*GRID, "seeds=[0]", f"run_dir={run_dir}"))
        assert f"in use by `lhopt baseline-grid (test holder)` (pid {holder.pid}" in line
        assert not (run_dir / "config.yaml").exists() and not (run_dir / "runs.parquet").exists()  # nothing changed
        line = one_error_line(lhopt("train-policy", "debug=smoke", f"run_dir={run_dir}"))
        assert "in use by" in line
    proc = lhopt(*GRID, "seeds=[0]", f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(_read(run_dir / "runs.parquet", RUN_COLUMNS)) == 35


def test_two_grids_started_together_lose_no_run(tmp_path):
    run_dir = tmp_path / "grid"
    procs = [subprocess.Popen([str(LHOPT), *GRID, seeds, f"run_dir={run_dir}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=lhopt_env()) for seeds in ("seeds=[0]", "seeds=[1,2]")]
    outcomes = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    runs = _read(run_dir / "runs.parquet", RUN_COLUMNS)
    for (code, err), seeds in zip(outcomes, ([0], [1, 2])):
        if code == 0:  # every run a finished command reported is in the table
            assert set(seeds) <= set(runs.seed.astype(int)), err
        else:  # the other was refused in one line, while the first held the folder
            assert code == 1 and err.strip().count("\n") == 0 and "in use by `lhopt baseline-grid`" in err
    assert 0 in [code for code, _ in outcomes]
    assert runs.run_id.is_unique and len(runs) == 35 * sum(len(s) for (c, _), s in zip(outcomes, ([0], [1, 2])) if c == 0)


def test_two_meta_training_runs_on_one_folder_log_each_iteration_once(tmp_path):
    run_dir = tmp_path / "policy"
    args = ["train-policy", "debug=smoke", f"run_dir={run_dir}"]
    procs = [subprocess.Popen([str(LHOPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=lhopt_env()) for _ in range(2)]
    codes = [p.wait(timeout=600) for p in procs]
    assert sorted(codes) == [0, 1]  # the second is refused: in use, or (if the first ended) already a run there
    log = pd.read_csv(run_dir / "meta_train.csv")
    assert log.iteration.is_unique and list(log.iteration) == list(range(1, len(log) + 1))


# --- damaged files -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished debug=smoke meta-training folder (checkpoint.pt, meta_train.csv, policy.pt)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    proc = lhopt("train-policy", "debug=smoke", f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir


def _copy(trained, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(trained, target)
    return target


def _overwrite_middle(path, size):
    data = bytearray(path.read_bytes())
    start = len(data) // 2 - size // 2
    data[start:start + size] = os.urandom(size)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, expected", [
    ("overwrite", "damaged"),
    ("truncate", "truncated"),
    ("empty", "truncated"),
    ("policy", "not a train-policy checkpoint (a policy file)"),
    ("pickle", "not loadable as tensors and plain data"),
    ("csv", "meta_train.csv: not a readable meta-training log"),
])
def test_a_damaged_checkpoint_or_log_is_refused_in_one_line(trained, tmp_path, damage, expected):
    run_dir = _copy(trained, tmp_path)
    checkpoint = run_dir / "checkpoint.pt"
    if damage == "overwrite":
        _overwrite_middle(checkpoint, 10_000 if checkpoint.stat().st_size > 30_000 else 2_000)
    elif damage == "truncate":
        checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    elif damage == "empty":
        checkpoint.write_bytes(b"")
    elif damage == "policy":
        shutil.copyfile(run_dir / "policy.pt", checkpoint)
    elif damage == "pickle":
        torch.save({"ppo": {}, "payload": pd.Timestamp("2026-01-01")}, checkpoint)  # a pickled object, not plain data
    else:
        (run_dir / "meta_train.csv").write_text("iteration,episodes\nthree,x\n\x00\x01garbage\n")
    line = one_error_line(lhopt("train-policy", "debug=smoke", "resume=true", "ppo.iterations=4", f"run_dir={run_dir}"))
    assert expected in line and (str(checkpoint) in line or damage == "csv")
    assert "weights_only" not in line


def test_a_policy_file_with_damaged_tensors_is_refused_by_evaluate(trained, tmp_path):
    policy = tmp_path / "policy.pt"
    shutil.copyfile(trained / "policy.pt", policy)
    _overwrite_middle(policy, 64)
    line = one_error_line(lhopt("evaluate", "debug=smoke", f"policy={policy}", "tasks=[nqm]", "seeds=[0]",
                                "extra_baselines=[]", f"run_dir={tmp_path / 'eval'}"))
    assert str(policy) in line and ("damaged" in line or "truncated" in line)


def record_runs(folder, count: int) -> None:
    """`count` finished grid runs of 5 curve points each, recorded in `folder`'s store."""
    ResultsStore(folder).add([
        ({"run_id": f"r{i}", "command": "baseline-grid", "method": "adamw", "task": "nqm", "task_params": "{}",
          "model_params": 10, "seed": i % 3, "lr0": 1e-3 * (i + 1), "schedule": "cosine", "status": "done",
          "steps": 40, "total_steps": 40, "final_valid_loss": 0.5 + i / 100, "wall_s": 1.0, "error": ""},
         [{"step": s, "valid_loss": 1.0 / (s + 1)} for s in range(5)]) for i in range(count)])


def test_single_bit_flips_in_runs_parquet_never_load_as_other_data(tmp_path):
    record_runs(tmp_path, 105)
    path = tmp_path / "runs.parquet"
    raw, good = path.read_bytes(), _read(path, RUN_COLUMNS)
    rng, outcomes = random.Random(0), {"detected": 0, "same": 0, "different": 0}
    for _ in range(120):
        data = bytearray(raw)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        try:
            outcomes["same" if _read(path, RUN_COLUMNS).equals(good) else "different"] += 1
        except StoreError:
            outcomes["detected"] += 1
    assert outcomes["different"] == 0 and outcomes["detected"] > 60, outcomes


def test_bit_flips_in_the_footer_of_runs_parquet_never_load_as_other_data(tmp_path):
    """The footer (row counts, offsets, types) is not covered by page checksums: the content's
    sha256 in the file's metadata is. The flip the attack battery found (a row group's row count:
    "Resuming: 3 of 35 runs already done") and 300 random flips in the footer."""
    import struct

    import pyarrow.parquet as pq

    record_runs(tmp_path, 35)
    path = tmp_path / "runs.parquet"
    raw, good = path.read_bytes(), _read(path, RUN_COLUMNS)
    footer_length = struct.unpack("<I", raw[-8:-4])[0]
    footer_start = len(raw) - 8 - footer_length
    # every footer byte that holds 35 as thrift writes it (zigzag varint 70: row counts, value
    # counts) set to 3 rows; pyarrow reads some of these files whole but short (the battery's
    # "Resuming: 3 of 35 runs already done"), and each must be refused or read as written
    short_reads = 0
    for at in [k for k in range(footer_start, len(raw) - 8) if raw[k] == 70]:
        data = bytearray(raw)
        data[at] = 6
        path.write_bytes(bytes(data))
        try:
            short_reads += pq.read_table(path, page_checksum_verification=True).num_rows == 3
        except Exception:
            pass
        try:
            assert _read(path, RUN_COLUMNS).equals(good)
        except StoreError:
            pass
    assert short_reads >= 1
    rng, outcomes = random.Random(1), {"detected": 0, "same": 0, "different": 0}
    for _ in range(300):
        data = bytearray(raw)
        data[rng.randrange(footer_start, len(raw) - 8)] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        try:
            outcomes["same" if _read(path, RUN_COLUMNS).equals(good) else "different"] += 1
        except StoreError:
            outcomes["detected"] += 1
    assert outcomes["different"] == 0, outcomes


def test_a_refused_meta_training_command_changes_nothing(trained, tmp_path):
    run_dir = _copy(trained, tmp_path)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".lhopt")}
    line = one_error_line(lhopt("train-policy", "debug=smoke", "seed=99", f"run_dir={run_dir}"))
    assert "already holds a meta-training run" in line
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".lhopt")}
    assert after == before  # config.yaml still says the first run's seed


# --- the file system says no ---------------------------------------------------------------------
def _fit_table(folder) -> str:
    """A table scaling-fit can read (its inputs are checked before the run folder)."""
    lines = ["params,tokens,loss"] + [f"{n},{t},{3 + 1 / (i + j + 1):.3f}" for i, n in enumerate(("1M", "2M", "4M"))
                                      for j, t in enumerate(("1B", "2B"))]
    path = folder / "fit.csv"
    path.write_text("\n".join(lines) + "\n")
    return f"inputs=[{path}]"


@pytest.mark.parametrize("command", [GRID + ["seeds=[0]"], ["scaling-fit", "FIT"],
                                     ["evaluate", "debug=smoke", "tasks=[nqm]"]])
def test_a_run_dir_that_is_a_file_or_lies_under_one_is_one_line(tmp_path, command):
    command = [_fit_table(tmp_path) if arg == "FIT" else arg for arg in command]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for run_dir, reason in ((blocker, "File exists"), (blocker / "below", "Not a directory")):
        line = one_error_line(lhopt(*command, f"run_dir={run_dir}", cwd=tmp_path))
        assert f"run_dir {run_dir}" in line and reason in line and f"{blocker} is a file, not a folder" in line
    assert blocker.read_text() == "not a folder"


def test_a_read_only_file_system_is_one_line(tmp_path, monkeypatch, capsys):
    # root ignores permission bits, so the refusal is simulated where lhopt first writes
    from pathlib import Path

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    table = _fit_table(tmp_path)
    monkeypatch.setattr(Path, "mkdir", read_only)
    for command in (GRID + ["seeds=[0]"], ["scaling-fit", table], ["evaluate", "debug=smoke"]):
        line = in_process_error(monkeypatch, capsys, *command, f"run_dir={tmp_path / 'ro'}")
        assert "Read-only file system" in line and str(tmp_path / "ro") in line


def test_a_disk_that_fills_mid_grid_leaves_no_temporary_file_and_a_rerun_loses_nothing(tmp_path, monkeypatch, capsys):
    import pyarrow.parquet as pq

    original, calls = pq.write_table, {"n": 0}

    def fills_up(table, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # the first record (curves, runs) fits, then the disk is full
            with open(path, "wb") as handle:
                handle.write(b"PAR1 half a table")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return original(table, path, *args, **kwargs)

    run_dir = tmp_path / "grid"
    monkeypatch.setattr(pq, "write_table", fills_up)
    line = in_process_error(monkeypatch, capsys, *GRID, "seeds=[0]", "executor.workers=1", f"run_dir={run_dir}")
    assert "No space left on device" in line and "nothing recorded is lost" in line
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    kept = _read(run_dir / "runs.parquet", RUN_COLUMNS)
    assert 0 < len(kept) < 35
    monkeypatch.setattr(pq, "write_table", original)  # space freed
    monkeypatch.setattr(sys, "argv", ["lhopt", *GRID, "seeds=[0]", "executor.workers=1", f"run_dir={run_dir}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    runs = _read(run_dir / "runs.parquet", RUN_COLUMNS)
    assert len(runs) == 35 and set(kept.run_id) <= set(runs.run_id)


def test_a_disk_that_fills_mid_checkpoint_keeps_the_old_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    from lhopt_cli.control import checkpoint as module

    path = tmp_path / "checkpoint.pt"
    module.atomic_save({"ppo": {"iteration": 5}}, path)
    original = torch.save

    def fills_up(obj, target, *args, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"PK half a zip")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(torch, "save", fills_up)
    with pytest.raises(OSError, match="No space left"):
        module.atomic_save({"ppo": {"iteration": 10}}, path)
    monkeypatch.setattr(torch, "save", original)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert module.load_verified(path) == {"ppo": {"iteration": 5}}


def test_a_refused_resume_changes_nothing_either(trained, tmp_path):
    run_dir = _copy(trained, tmp_path)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".lhopt")}
    line = one_error_line(lhopt("train-policy", "debug=smoke", "resume=true", "controller.stats_every=8",
                                f"run_dir={run_dir}"))
    assert "another observation protocol" in line
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".lhopt")}
    assert after == before


def test_checkpoints_and_policies_with_the_wrong_fields_are_one_line(trained, tmp_path):
    from lhopt_cli.config.compose import ConfigError
    from lhopt_cli.control.checkpoint import PolicyFileError, atomic_save, load_policy
    from lhopt_cli.commands.train_policy import load_checkpoint

    state = torch.load(trained / "checkpoint.pt", weights_only=True)
    atomic_save({**state, "ppo": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(ConfigError, match="not a complete train-policy checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.pt")
    blob = torch.load(trained / "policy.pt", weights_only=True)
    for broken in ({"format": "lhopt-policy", "version": 1}, {**blob, "state_dict": {}}, {**blob, "hidden": "abc"},
                   {**blob, "protocol": None, "config": 5}):
        atomic_save(broken, tmp_path / "policy.pt")
        with pytest.raises(PolicyFileError, match="not a valid lhopt policy file|observation protocol|not a usable policy"):
            load_policy(tmp_path / "policy.pt")


def test_a_table_whose_footer_changed_a_column_type_is_refused(tmp_path):
    store = ResultsStore(tmp_path)
    store.add([({"run_id": "r", "command": "baseline-grid", "method": "adamw", "task": "nqm", "task_params": "{}",
                 "model_params": 10, "seed": 1, "lr0": 1e-3, "schedule": "cosine", "status": "done", "steps": 4,
                 "total_steps": 4, "final_valid_loss": 0.5, "wall_s": 1.0, "error": ""}, [{"step": 0, "valid_loss": 1.0}])])
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    runs["seed"] = pd.to_timedelta(runs.seed, unit="s")  # what a flipped bit in the Arrow schema metadata reads as
    runs.to_parquet(tmp_path / "runs.parquet", index=False)
    with pytest.raises(StoreError, match="column seed reads as timedelta"):
        ResultsStore(tmp_path)


def test_outputs_replace_planted_symlinks_and_a_full_disk_in_torch_is_one_oserror(tmp_path, monkeypatch):
    from lhopt_cli.control.checkpoint import atomic_save
    from lhopt_cli.support.report import write_grid_csv

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "grid_table.csv").symlink_to(victim)
    write_grid_csv(pd.DataFrame({"cosine": [1.0]}, index=[1e-3]), tmp_path / "grid_table.csv")
    assert victim.read_text() == "precious" and not (tmp_path / "grid_table.csv").is_symlink()

    def torch_full(obj, target, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 321472 vs 321360")

    monkeypatch.setattr(torch, "save", torch_full)
    with pytest.raises(OSError, match="is the disk full"):
        atomic_save({"a": 1}, tmp_path / "checkpoint.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid_table.csv", "victim.txt"]


def test_an_evaluate_whose_grid_dir_is_held_is_refused(trained, tmp_path):
    grid_dir = tmp_path / "grid"
    grid_dir.mkdir()
    with held_elsewhere(grid_dir):
        line = one_error_line(lhopt("evaluate", "debug=smoke", f"policy={trained / 'policy.pt'}", "tasks=[nqm]",
                                    "seeds=[0]", "extra_baselines=[]", f"grid_dir={grid_dir}",
                                    f"run_dir={tmp_path / 'eval'}"))
        assert line.startswith(f"error: grid_dir: {grid_dir} is in use by") and not (grid_dir / "runs.parquet").exists()
    # every lock is taken before the first byte: the refused command printed nothing and left no folder
    with held_elsewhere(grid_dir):
        proc = lhopt("evaluate", "debug=smoke", f"policy={trained / 'policy.pt'}", "tasks=[nqm]", "seeds=[0]",
                     "extra_baselines=[]", f"grid_dir={grid_dir}", f"run_dir={tmp_path / 'new' / 'eval'}")
        assert proc.returncode == 1 and "is in use by" in proc.stderr and proc.stdout == ""
        assert not (tmp_path / "new").exists()


def test_a_grid_dir_the_file_system_refuses_leaves_no_run_folder(trained, tmp_path, monkeypatch, capsys):
    # root ignores permission bits: the read-only grid_dir is simulated where its lock is taken
    grid_dir = tmp_path / "grid"
    grid_dir.mkdir()

    def read_only(run_dir, command):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(run_dir / ".lhopt.lock"))

    monkeypatch.setattr("lhopt_cli.commands.evaluate.folder_lock", read_only)
    line = in_process_error(monkeypatch, capsys, "evaluate", "debug=smoke", f"policy={trained / 'policy.pt'}",
                            "tasks=[nqm]", "seeds=[0]", "extra_baselines=[]", f"grid_dir={grid_dir}",
                            f"run_dir={tmp_path / 'e2'}")
    assert line == f"error: grid_dir: {grid_dir}: Read-only file system" and not (tmp_path / "e2").exists()


@pytest.mark.parametrize("command", [GRID + ["seeds=[0]"], ["evaluate", "debug=smoke", "tasks=[nqm]", "seeds=[0]"]])
def test_a_full_disk_at_a_new_run_folder_leaves_no_folder_or_lock_file(tmp_path, monkeypatch, capsys, command):
    from lhopt_cli.support import files

    def full(path, write):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(files, "atomic_write", full)
    line = in_process_error(monkeypatch, capsys, *command, f"run_dir={tmp_path / 'new' / 'run'}")
    assert "No space left on device" in line and not (tmp_path / "new").exists()


def test_a_traceback_before_any_result_leaves_no_folder(tmp_path, monkeypatch, capsys):
    from lhopt_cli.commands import baseline_grid

    def broken(*args, **kwargs):
        raise RuntimeError("an error inside the job")

    monkeypatch.setattr(baseline_grid, "run", broken)
    monkeypatch.setattr(sys, "argv", ["lhopt", *GRID, "seeds=[0]", f"run_dir={tmp_path / 'new' / 'run'}"])
    with pytest.raises(BaseException):
        main()
    assert not (tmp_path / "new").exists()


def _folder_state(folder) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("case", ["other_policy", "unreadable_policy_record", "grid_dir_file", "grid_dir_under_file", "damaged_grid",
                                  "damaged_evaluate_table", "damaged_evaluate_grid", "too_few_frontier_points"])
def test_a_command_refused_on_what_its_run_dir_holds_leaves_it_as_it_was(trained, tmp_path, case):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "config.yaml").write_text("mine: true\n")  # an earlier run's config, not to be overwritten
    (existing / ".lhopt.lock.json").write_text('{"command": "lhopt evaluate", "pid": 1}\n')
    evaluate = ["evaluate", "debug=smoke", f"policy={trained / 'policy.pt'}", "tasks=[nqm]", "seeds=[0]",
                "extra_baselines=[]"]
    if case == "other_policy":
        (existing / "policy.json").write_text('{"path": "other.pt", "sha256": "0"}\n')
        command, expected = evaluate, "holds the runs of another policy"
    elif case == "unreadable_policy_record":
        (existing / "policy.json").write_text("[1]\n")
        command, expected = evaluate, "not a readable policy record"
    elif case == "grid_dir_file":
        (tmp_path / "grid_file").write_text("x")
        command, expected = [*evaluate, f"grid_dir={tmp_path / 'grid_file'}"], "is a file, not a folder"
    elif case == "grid_dir_under_file":
        (tmp_path / "grid_file").write_text("x")
        command, expected = [*evaluate, f"grid_dir={tmp_path / 'grid_file' / 'sub'}"], "is a file, not a folder"
    elif case == "damaged_evaluate_grid":
        (existing / "grid").mkdir()
        (existing / "grid" / "runs.parquet").write_bytes(b"not parquet")
        command, expected = evaluate, "damaged or not a Parquet table"
    elif case == "damaged_grid":
        (existing / "results.parquet").write_bytes(b"not parquet")
        command, expected = GRID + ["seeds=[0]"], "damaged or not a Parquet table"
    elif case == "damaged_evaluate_table":
        (existing / "runs.parquet").write_bytes(b"not parquet")
        command, expected = evaluate, "damaged or not a Parquet table"
    else:
        table = tmp_path / "two.csv"
        # loss grows with compute: the frontier keeps the cheapest point alone
        table.write_text("params,tokens,loss\n" + "".join(f"{n},{t},{3 + i + j / 10}\n" for i, n in enumerate(("1M", "2M"))
                                                           for j, t in enumerate(("1B", "2B", "4B"))))
        command, expected = ["scaling-fit", f"inputs=[{table}]"], "frontier points; at least 3 are needed"
    before = _folder_state(existing)
    assert expected in one_error_line(lhopt(*command, f"run_dir={existing}"))
    assert _folder_state(existing) == before and not (existing / ".lhopt.lock").exists()
    nested = tmp_path / "new" / "deeper"
    if case in ("other_policy", "unreadable_policy_record", "damaged_grid", "damaged_evaluate_table", "damaged_evaluate_grid"):
        return  # these refusals need what the existing folder holds
    assert expected in one_error_line(lhopt(*command, f"run_dir={nested}"))
    assert not (tmp_path / "new").exists()  # nor the folders it would have made


def test_a_run_folder_records_the_overrides_as_typed(run_cli, tmp_path):
    import yaml

    args = ["debug=smoke", "seeds=[0]", "grid.lrs=[1e-3]", "grid.schedules=[constant]", f"run_dir={tmp_path / 'g'}"]
    assert run_cli("baseline-grid", *args).exit_code == 0
    assert yaml.safe_load((tmp_path / "g" / "overrides.yaml").read_text()) == args


def test_a_run_folder_keeps_a_log_of_what_each_command_printed(tmp_path):
    import subprocess

    from conftest import LHOPT, lhopt_env

    run_dir = tmp_path / "g"
    args = [str(LHOPT), "baseline-grid", "debug=smoke", "seeds=[0]", "grid.lrs=[1e-3]", "grid.schedules=[constant]",
            f"run_dir={run_dir}"]
    first = subprocess.run(args, capture_output=True, text=True, env=lhopt_env(), timeout=300)
    again = subprocess.run(args, capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    log = (run_dir / "lhopt.log").read_text()
    assert log.count("$ lhopt baseline-grid debug=smoke") == 2  # one header per command, appended
    assert "best: lr=0.001 schedule=constant" in log and "All 1 runs are already done" in log
    assert "\x1b[" not in log  # plain text: no colours, no cursor moves of the progress bar


def test_a_link_planted_at_the_log_is_refused_in_one_line(tmp_path):
    import subprocess

    from conftest import LHOPT, lhopt_env

    run_dir, outside = tmp_path / "g", tmp_path / "outside.txt"
    run_dir.mkdir()
    outside.write_text("mine\n")
    (run_dir / "lhopt.log").symlink_to(outside)
    proc = subprocess.run([str(LHOPT), "baseline-grid", "debug=smoke", "seeds=[0]", "grid.lrs=[1e-3]",
                           "grid.schedules=[constant]", f"run_dir={run_dir}"], capture_output=True, text=True,
                          env=lhopt_env(), timeout=300)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert outside.read_text() == "mine\n"


def test_grid_workers_end_when_their_parent_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from conftest import LHOPT, lhopt_env

    proc = subprocess.Popen([str(LHOPT), "baseline-grid", "task=char_lm", "seeds=[0]", "executor.workers=2",
                             "grid.lrs=[1e-4,1e-3,3e-3,1e-2]", "grid.schedules=[constant]", f"run_dir={tmp_path / 'g'}"],  # enough work that auto starts its workers
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=lhopt_env())
    children: set[int] = set()
    for _ in range(240):  # until both workers are up
        time.sleep(0.25)
        listing = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True).stdout
        children = {int(p) for p in listing.split()}
        if len(children) >= 2:
            break
    assert len(children) >= 2, "the grid never started its workers"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") and
                                         open(f"/proc/{pid}/stat").read().split()[2] != "Z" for pid in children):
        time.sleep(0.25)
    alive = [pid for pid in children if os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"]
    assert not alive, f"workers {alive} outlived their killed parent"


def test_no_command_writes_through_a_link_planted_at_a_file_it_writes(trained, tmp_path):
    """Links at summary.csv, decisions_*.csv, policy.json, meta_train.csv, fits.json and fits.csv
    (to files outside, or dangling): each output replaces its link; nothing outside changes."""
    from test_scaling import curves

    outside = tmp_path / "outside"
    outside.mkdir()
    victims = {name: outside / f"{name}.victim" for name in ("summary.csv", "decisions_nqm_s0.csv", "fits.csv")}
    for victim in victims.values():
        victim.write_text("precious\n")
    dangling = {name: outside / f"{name}.created" for name in ("policy.json", "meta_train.csv", "fits.json")}

    def plant(folder, names):
        folder.mkdir()
        for name in names:
            (folder / name).symlink_to(victims.get(name) or dangling[name])

    evaluated = tmp_path / "eval"
    plant(evaluated, ["summary.csv", "decisions_nqm_s0.csv", "policy.json"])
    proc = lhopt("evaluate", "debug=smoke", f"policy={trained / 'policy.pt'}", "tasks=[nqm]", "seeds=[0]",
                 "extra_baselines=[]", f"grid_dir={tmp_path / 'grid'}", f"run_dir={evaluated}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = tmp_path / "meta"
    plant(meta, ["meta_train.csv"])
    proc = lhopt("train-policy", "debug=smoke", "ppo.iterations=1", f"run_dir={meta}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    fitted = tmp_path / "fit"
    plant(fitted, ["fits.csv", "fits.json"])
    curves("baseline", 1e8, 0.076).to_csv(tmp_path / "points.csv", index=False)
    proc = lhopt("scaling-fit", f"inputs=[{tmp_path / 'points.csv'}]", "bootstrap=10", f"run_dir={fitted}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(v.read_text() == "precious\n" for v in victims.values())
    assert sorted(p.name for p in outside.iterdir()) == sorted(v.name for v in victims.values())
    for folder, name in [(evaluated, "summary.csv"), (evaluated, "decisions_nqm_s0.csv"), (evaluated, "policy.json"),
                         (meta, "meta_train.csv"), (fitted, "fits.csv"), (fitted, "fits.json")]:
        assert (folder / name).is_file() and not (folder / name).is_symlink() and (folder / name).stat().st_size > 0


def test_paths_that_are_devices_or_fifos_are_named_never_read(tmp_path):
    """A replay file, a scaling-fit input, a policy and the calibration cache that are a device or a
    FIFO: one line saying what each is (reading /dev/zero grew to 22 GB; a FIFO hung)."""
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    cases = [
        (["evaluate", "debug=smoke", "tasks=[nqm]", "seeds=[0]", "replay=/dev/zero"], "/dev/zero is a character device"),
        (["evaluate", "debug=smoke", "tasks=[nqm]", "seeds=[0]", f"replay={fifo}"], "is a named pipe (FIFO)"),
        (["scaling-fit", f"inputs=[{tmp_path / 'zero.csv'}]"], "is a character device, not a file"),
        (["evaluate", "debug=smoke", "tasks=[nqm]", "seeds=[0]", "policy=/dev/zero"],
         "/dev/zero is a character device, not a policy file"),
    ]
    for args, message in cases:
        proc = lhopt(*args, f"run_dir={tmp_path / 'run'}", timeout=60)
        assert message in one_error_line(proc) and not (tmp_path / "run").exists()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "calibration.json").symlink_to("/dev/zero")
    env = {**lhopt_env(), "LHOPT_CACHE": str(cache)}
    proc = subprocess.run([str(LHOPT), "baseline-grid", "debug=smoke", "task=nqm", "executor.workers=2",
                           f"run_dir={tmp_path / 'grid'}"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]  # measured again, and written as a file in the link's place
    assert (cache / "calibration.json").is_file() and not (cache / "calibration.json").is_symlink()
    (tmp_path / "cachefile").write_text("x")
    env["LHOPT_CACHE"] = str(tmp_path / "cachefile")
    proc = subprocess.run([str(LHOPT), "baseline-grid", "debug=smoke", "task=nqm", f"run_dir={tmp_path / 'g2'}"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert "is a file, not a folder: point LHOPT_CACHE at a folder" in one_error_line(proc)


def test_a_grid_folder_whose_curves_are_gone_runs_them_again(tmp_path):
    run_dir = tmp_path / "grid"
    assert lhopt(*GRID, "seeds=[0]", "executor.workers=1", f"run_dir={run_dir}").returncode == 0
    (run_dir / "results.parquet").unlink()
    assert ResultsStore(run_dir).finished_ids() == set()  # runs without curves are not finished
    again = lhopt(*GRID, "seeds=[0]", "executor.workers=1", f"run_dir={run_dir}")
    assert again.returncode == 0 and "35 runs on 1 worker" in again.stdout
    store = ResultsStore(run_dir)
    assert len(store.finished_ids()) == 35 and set(store.curves.run_id) == store.finished_ids()


def test_a_policy_whose_obs_clip_is_not_finite_is_refused(trained, tmp_path):
    from lhopt_cli.control.checkpoint import PolicyFileError, atomic_save, load_policy, load_verified

    blob = load_verified(trained / "policy.pt")
    blob["obs_clip"] = float("nan")
    atomic_save(blob, tmp_path / "nan_clip.pt")
    with pytest.raises(PolicyFileError, match="obs_clip nan is not a positive, finite number"):
        load_policy(tmp_path / "nan_clip.pt")


def test_a_meta_training_log_emptied_to_its_header_is_refused_on_resume(trained, tmp_path):
    run_dir = _copy(trained, tmp_path)
    header = (run_dir / "meta_train.csv").read_text().splitlines()[0]
    (run_dir / "meta_train.csv").write_text(header + "\n")
    line = one_error_line(lhopt("train-policy", "debug=smoke", "ppo.iterations=3", "resume=true", f"run_dir={run_dir}"))
    assert "rows are missing up to the checkpoint's iteration" in line


def test_a_link_at_the_log_of_an_existing_folder_leaves_its_config_as_it_was(tmp_path):
    run_dir, outside = tmp_path / "g", tmp_path / "outside.txt"
    first = lhopt(*GRID, "seeds=[0]", "grid.lrs=[1e-3]", "grid.schedules=[constant]", f"run_dir={run_dir}")
    assert first.returncode == 0, first.stderr[-2000:]
    config, overrides = (run_dir / "config.yaml").read_bytes(), (run_dir / "overrides.yaml").read_bytes()
    (run_dir / "lhopt.log").unlink()
    outside.write_text("mine\n")
    (run_dir / "lhopt.log").symlink_to(outside)
    again = lhopt(*GRID, "seeds=[0,1]", "grid.lrs=[1e-3]", "grid.schedules=[constant]", f"run_dir={run_dir}")
    one_error_line(again)
    assert (run_dir / "config.yaml").read_bytes() == config and (run_dir / "overrides.yaml").read_bytes() == overrides
    assert outside.read_text() == "mine\n"


def test_a_link_planted_at_the_run_folders_grid_is_refused_not_followed(trained, tmp_path):
    run_dir, elsewhere = tmp_path / "e", tmp_path / "elsewhere"
    run_dir.mkdir()
    elsewhere.mkdir()
    (run_dir / "grid").symlink_to(elsewhere, target_is_directory=True)
    proc = lhopt("evaluate", "debug=smoke", f"policy={trained / 'policy.pt'}", "tasks=[nqm]", "seeds=[0]",
                 "extra_baselines=[]", "extended_lrs=[]", f"run_dir={run_dir}")
    assert "a link stands at the run folder's grid" in one_error_line(proc)
    assert not any(elsewhere.iterdir()) and sorted(p.name for p in run_dir.iterdir()) == ["grid"]


def test_a_folder_planted_at_a_result_file_is_named_not_its_temporary(tmp_path):
    from test_scaling import curves

    pd.concat([curves("baseline", 1e8, 0.076), curves("lhopt", 5e7, 0.076)]).to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "o"
    (out / "fits.json").mkdir(parents=True)
    line = one_error_line(lhopt("scaling-fit", f"inputs=[{tmp_path / 't.csv'}]", "bootstrap=10", "parametric=false",
                                f"run_dir={out}"))
    assert "fits.json" in line and "a folder" in line and ".tmp" not in line, line


def test_a_command_into_a_folder_another_command_made_is_refused_naming_it(trained, tmp_path):
    run_dir = tmp_path / "t"
    shutil.copytree(trained, run_dir)
    before = sorted(p.name for p in run_dir.iterdir())
    line = one_error_line(lhopt(*GRID, f"run_dir={run_dir}"))
    assert "holds a `lhopt train-policy` run" in line, line
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_a_grid_folder_at_other_settings_whose_curves_are_gone_still_gets_the_notice(trained, tmp_path):
    grid = tmp_path / "grid"
    made = lhopt(*GRID, "seeds=[0]", f"run_dir={grid}", "executor.workers=1")
    assert made.returncode == 0, made.stderr[-2000:]
    (grid / "results.parquet").unlink()  # the runs are recorded, their curves deleted
    proc = lhopt("evaluate", "debug=smoke", f"policy={trained / 'policy.pt'}", "tasks=[nqm]", "seeds=[0]",
                 f"grid_dir={grid}", "extra_baselines=[]", "extended_lrs=[]", f"run_dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"grid_dir {grid}: its nqm runs were made at other task settings" in proc.stdout.replace("\n", " ")
