"""The scripts in scripts/ run, in a smoke form (a documented command that no longer runs is a defect)."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import REPO, lhopt_env
from lhopt_cli.config.compose import compose
from lhopt_cli.control.checkpoint import load_policy


def script_path(name: str) -> Path:
    """A script of scripts/ by file name, in whichever group folder holds it."""
    (path,) = (REPO / "scripts").glob(f"*/{name}")
    return path


def script(name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script_path(name)), *args], capture_output=True, text=True,
                          env=lhopt_env(), timeout=timeout, cwd=REPO)


def test_learning_check_trains_and_compares_before_and_after(tmp_path):
    proc = script("learning_check.py", "--iterations", "2", "--envs", "4", "--groups", "1",
                  "--run-dir", str(tmp_path), "debug=smoke")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "iterations    1-   2:" in proc.stdout
    assert "untrained policy: mean reward" in proc.stdout and "trained policy:   mean reward" in proc.stdout
    assert (tmp_path / "policy.pt").exists()


def test_ppo_cartpole_runs_and_reports_a_greedy_evaluation():
    proc = script("ppo_cartpole.py", "--iterations", "2")
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: not solved in 2 iterations (the full run: 500)
    assert "greedy evaluation over 20 episodes: mean return" in proc.stdout


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from rich.console import Console

    from lhopt_cli.commands import train_policy
    from lhopt_cli.config.compose import compose, make_run_dir

    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose("train_policy", ["debug=smoke", "task_family.kinds.mnist1d_conv.weight=0", f"run_dir={run_dir}",
                                   "controller.stats_every=2", "ppo.polyak=0.5"])
    make_run_dir(cfg)
    train_policy.run(train_policy.plan(cfg, run_dir), Console(quiet=True))
    return run_dir


def test_export_policy_writes_the_checkpoint_with_its_protocol(smoke_run, tmp_path):
    proc = script("export_policy.py", str(smoke_run), str(tmp_path / "exported.pt"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "policy after 2 PPO iterations" in proc.stdout
    _, meta = load_policy(tmp_path / "exported.pt")
    _, trained = load_policy(smoke_run / "policy.pt")
    assert meta["protocol"] == trained["protocol"] and meta["protocol"]["stats_every"] == 2
    assert meta["config"]["trained_iterations"] == 2 and meta["config"]["weights"] == "raw"
    proc = script("export_policy.py", str(smoke_run), str(tmp_path / "averaged.pt"), "--polyak")
    assert proc.returncode == 0 and "polyak weights" in proc.stdout, proc.stderr[-2000:]
    averaged, meta = load_policy(tmp_path / "averaged.pt")
    raw, _ = load_policy(tmp_path / "exported.pt")
    state = torch.load(smoke_run / "checkpoint.pt", map_location="cpu", weights_only=True)["ppo"]
    assert meta["config"]["weights"] == "polyak"
    assert all(torch.equal(averaged.state_dict()[k], v) for k, v in state["polyak"].items())
    assert not all(torch.equal(raw.state_dict()[k], v) for k, v in state["polyak"].items())


def test_meta_train_summary_tabulates_a_run(smoke_run, tmp_path):
    proc = script("meta_train_summary.py", str(smoke_run), "--block", "1", "--png", str(tmp_path / "curve.png"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(pd.read_csv(smoke_run / "meta_train.csv")) == 2 and (tmp_path / "curve.png").stat().st_size > 5_000


def test_reference_grids_are_stored_reused_by_evaluate_and_reproducible(run_cli, smoke_policy, tmp_path):
    import json

    from lhopt_cli.inner import HParams, train_one_epoch
    from lhopt_cli.inner.schedules import ScheduleHook
    from lhopt_cli.results.store import load
    from lhopt_cli.tasks import build_task

    # test_short's fair_tabular is the task at its defaults, as tasks=[fair_tabular] runs it
    proc = script("make_reference_grids.py", "--suites", "test_short", "--members", "fair_tabular", "--seeds", "0",
                  "--out", str(tmp_path), "debug=smoke")
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((tmp_path / "test_short" / "MANIFEST.json").read_text())
    call = manifest["calls"][0]
    assert call["members"] == ["fair_tabular"] and "torch" in call["packages"] and call["cpu_s"] > 0
    result = run_cli("evaluate", "debug=smoke", "tasks=[fair_tabular]", "seeds=[0]", f"policy={smoke_policy}",
                     "extra_baselines=[]", "extended_lrs=[0.03,0.1]", "extended_schedules=null",
                     f"grid_dir={tmp_path / 'test_short'}", f"run_dir={tmp_path / 'eval'}")
    assert result.exit_code == 0, result.output
    assert "All 49 runs are already done" in result.output  # paper and extended lrs stored: only the policy ran
    # one stored run recomputed from its own row gives the same curve
    curves = load(tmp_path / "test_short")
    run = curves[(curves.lr0 == 3e-3) & (curves.schedule == "cosine")].sort_values("step")
    task = build_task(json.loads(run.task_params.iloc[0]))
    base = HParams(lr=3e-3)  # the grid's other hyperparameters are AdamW's defaults, no clipping
    again = train_one_epoch(task, 0, ScheduleHook("cosine", base), base)
    assert [r["valid_loss"] for r in again.curve] == pytest.approx(run.valid_loss.tolist(), rel=1e-5)


def test_bench_speedup_reports_every_method_against_both_grids_with_a_figure(smoke_policy, tmp_path):
    proc = script("bench_speedup.py", "--policy", str(smoke_policy), "--label", "smoke", "--suite", "smoke",
                  "--seeds", "0", "1", "--out", str(tmp_path), "--markdown", "debug=smoke")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "smoke" / "smoke"  # <out>/<label>/<suite>
    summary = pd.read_csv(run / "summary.csv")
    # the untuned choices are runs of the stored grid (fixed_default: chosen on validation_heldout's
    # grid, which is the default extended grid); the oracle is its best run in hindsight
    from lhopt_cli.commands.method_runs import EXTRA_BASELINES

    assert set(summary.method) == {"best_baseline", "lhopt", "adamw_default", "fixed_default", "oracle",
                                   *EXTRA_BASELINES} and set(summary.seed) == {0, 1}
    for method in ("lhopt", *EXTRA_BASELINES):
        s = summary[(summary.method == method) & (summary.task == "nqm_small")].speedup
        assert f"{s.median():.2f}x [{s.min():.2f}, {s.max():.2f}]" in proc.stdout  # the table shows the seeds' spread
        assert f"{method:<14} median over tasks" in proc.stdout
    # the headline with its bootstrap interval over tasks and seeds, the one the library computes
    from lhopt_cli.results.summary import overall, per_task

    totals = overall(per_task(summary[summary.method != "best_baseline"]), summary).set_index("method")
    for method in ("lhopt", "fixed_default", "prodigy"):
        r = totals.loc[method]
        assert r.median_lo <= r["median"] <= r.median_hi
        assert f"{method:<14} median over tasks {r['median']:.2f}x [{r.median_lo:.2f}, {r.median_hi:.2f}]" in proc.stdout
    assert "the interval excludes 1.0 from" in proc.stdout or "does not exclude 1.0 at 2 seeds" in proc.stdout
    assert "its width, drawn apart: over the seeds alone [" in proc.stdout and "over the tasks alone [" in proc.stdout
    assert "lhopt goals: median over tasks >= 1.0x" in proc.stdout and ">= 1.5x" not in proc.stdout.split("lhopt goals")[1].split(";")[0]
    assert "ratio to fixed_default >= 1.5x" in proc.stdout and "ahead of the tuning-free optimizers on >= 2 of 2" in proc.stdout
    # lhopt's place among every choice that needs no tuning, and the comparators it beats per task
    from lhopt_cli.results.summary import comparators_beaten, rank_among_untuned

    rank, of = rank_among_untuned(totals.reset_index())
    assert of == 2 + len(EXTRA_BASELINES) + 1 and f"lhopt ranks {rank} of {of} among the choices that need no tuning" in proc.stdout
    beaten = comparators_beaten(per_task(summary))
    assert all(f"{task} {count}/{of - 1}" in proc.stdout for task, count in beaten.items())
    table = (run / "speedup_smoke.md").read_text()
    assert "| nqm_small |" in table and "| mlp_digits_small |" in table and "**median over tasks**" in table
    assert f"| {beaten['nqm_small']} of {of - 1} |" in table
    assert f"**{totals.loc['lhopt', 'median']:.2f}x** [{totals.loc['lhopt', 'median_lo']:.2f}, " in table
    assert (run / "speedup_smoke.png").stat().st_size > 10_000


def test_bench_speedup_says_there_is_no_ratio_when_fixed_default_scores_zero_everywhere(smoke_policy, tmp_path):
    # lr 30 diverges on every task: every ratio to it is undefined, and the tables are still written
    proc = script("bench_speedup.py", "--policy", str(smoke_policy), "--suite", "smoke", "--seeds", "0", "1",
                  "--out", str(tmp_path), "--label", "zero", "debug=smoke",
                  "extended_lrs=[1.0e-5,3.0e-5,3.0e-2,1.0e-1,30.0]", "fixed_default={lr:30.0,schedule:constant}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no ratio (fixed_default scored 0x on every task)" in proc.stdout
    assert "ratio to fixed_default >= 1.5x (no ratio) NOT met" in proc.stdout and "more seeds" not in proc.stdout
    assert (tmp_path / "zero" / "smoke" / "speedup_smoke.md").exists()


@pytest.mark.parametrize("name, args, message", [
    ("make_reference_grids.py", ["--suites", "smoke", "--members", "typo", "--out", "OUT"],
     "error: unknown member id(s) typo; known: mlp_digits_small, nqm_small"),
    ("make_reference_grids.py", ["--suites", "train", "--out", "OUT"], "error: suite train lists no tasks"),
    ("make_reference_grids.py", ["--suites", "nope", "--out", "OUT"], "error: unknown suite 'nope'"),
    ("make_reference_grids.py", ["--suites", "validation", "--seeds", "0", "--paper-only", "debug=smoke"],
     "error: overrides (debug=smoke) would change the stored reference grids"),
    ("bench_speedup.py", ["--suite", "smoke", "--out", "OUT", "seeds=[1]"], "error: seeds=[1]: set it with --seeds"),
    ("bench_speedup.py", ["--suite", "nope", "--out", "OUT"], "error: unknown suite 'nope'"),
])
def test_script_input_errors_are_one_line_and_change_nothing(tmp_path, name, args, message):
    before = subprocess.run(["git", "status", "--porcelain", "benchmarks"], capture_output=True, text=True, cwd=REPO).stdout
    proc = script(name, *[str(tmp_path / "out") if a == "OUT" else a for a in args], timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[0]], proc.stderr
    assert proc.stderr.startswith(message), proc.stderr
    assert subprocess.run(["git", "status", "--porcelain", "benchmarks"], capture_output=True, text=True,
                          cwd=REPO).stdout == before


def test_bench_overhead_prints_the_ratio_of_both_loops():
    proc = script("bench_overhead.py", "--tasks", "nqm", "--repeats", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("nqm:"))
    ratio = float(line.rsplit("overhead ratio", 1)[1])
    assert ratio > 0 and "decisions; " in line and "ms added per step" in line


def test_grid_headroom_scores_the_best_single_run_of_a_stored_grid(tmp_path):
    proc = script("grid_headroom.py", "--suite", "validation", "--markdown", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "x [" in line]
    assert len(rows) == 12  # one per validation member, numbered within its kind
    assert any(row.startswith("| nqm_0 |") for row in rows)
    for row in rows:  # the best of 35 is among the candidates, so no ceiling is below 1x
        assert float(row.split("|")[2].split("x")[0]) >= 1.0
    assert proc.stdout.strip().splitlines()[-1].startswith("median over tasks ")


def test_grid_headroom_scores_only_the_suites_own_members_by_their_ids():
    proc = script("grid_headroom.py", "--suite", "test", "--markdown", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "x [" in line]
    names = sorted(line.split("|")[1].strip() for line in rows)
    # the stored grid also holds a replaced member (digits_transformer at batch 2): not scored
    assert names == sorted(m["id"] for m in compose("evaluate", ["suite=test"]).suite.members)


def test_grid_headroom_finds_the_run_that_beats_the_paper_grid():
    sys.path.insert(0, str(REPO / "scripts" / "suites"))
    from grid_headroom import ceilings
    steps = [0, 10, 20, 30, 40]
    def run(lr, schedule, losses):
        return pd.DataFrame({"task": "toy", "task_params": "{}", "seed": 0, "lr0": lr, "schedule": schedule,
                             "step": steps, "valid_loss": losses})
    paper = [run(lr, "constant", [2.0, 1.8, 1.6, 1.4, 1.2]) for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)]
    faster = run(3e-2, "constant", [2.0, 1.4, 1.2, 1.1, 1.0])
    table = ceilings(pd.concat([*paper, faster], ignore_index=True))
    assert table.lr0.tolist() == [3e-2] and table.extended.tolist() == [True]
    assert table.speedup.iloc[0] > 1.0
    table = ceilings(pd.concat(paper, ignore_index=True))
    assert table.speedup.iloc[0] == 1.0 and not table.extended.iloc[0]


def test_grid_headroom_without_a_stored_grid_is_one_line(tmp_path):
    proc = script("grid_headroom.py", "--grids", str(tmp_path), "--suite", "test", timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith("error: no stored grid at ")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_select_policy_scores_policies_on_validation_suites_and_names_the_best(smoke_policy, tmp_path):
    bundled = REPO / "src" / "lhopt_cli" / "policies" / "default.pt"
    decayed = tmp_path / "decayed.pt"  # files may differ in their lr decay: each runs under its own
    assert script("set_lr_decay.py", str(bundled), str(decayed), "--lr-decay", "constant").returncode == 0  # not the bundled one
    proc = script("select_policy.py", str(smoke_policy), str(bundled), str(decayed), "--suites", "smoke", "--grid-dir",
                  str(tmp_path / "grids"), "--markdown", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("| /")}
    assert set(rows) == {str(smoke_policy), str(bundled), str(decayed)}
    assert rows[str(bundled)].split("|")[3:-1] != rows[str(decayed)].split("|")[3:-1]  # the decay was applied
    medians = {path: float(row.split("|")[2].strip().rstrip("x")) for path, row in rows.items()}
    for path, row in rows.items():  # the median is the median of the members' scores
        members = [float(v) for v in row.split("|")[3:-1]]
        assert len(members) == 2 and abs(medians[path] - sum(members) / 2) < 0.01
    best = max(medians, key=medians.get)
    assert proc.stdout.strip().splitlines()[-1].startswith(f"best: {best} (median ")


def test_select_policy_neighbours_print_the_pass_to_pass_spread_and_spread_judges_the_gap(smoke_policy, tmp_path):
    bundled = REPO / "src" / "lhopt_cli" / "policies" / "default.pt"
    decayed = tmp_path / "decayed.pt"
    assert script("set_lr_decay.py", str(bundled), str(decayed), "--lr-decay", "constant").returncode == 0
    proc = script("select_policy.py", str(smoke_policy), str(bundled), str(decayed),
                  "--suites", "smoke", "--grid-dir", str(tmp_path / "grids"), "--neighbours", "--spread", "0.001",
                  "--out", str(tmp_path / "scores.csv"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(tmp_path / "scores.csv")
    assert set(table.suite) == {"smoke"} and len(table) == 6 and set(table.seeds.astype(str)) == {"0"}
    medians = table.groupby("policy", sort=False).speedup.median().tolist()
    steps = sorted(abs(b - a) for a, b in zip(medians, medians[1:]))
    line = next(x for x in proc.stdout.splitlines() if x.startswith("pass-to-pass spread: "))
    assert float(line.split()[2]) == pytest.approx(sum(steps) / 2, abs=1e-3)  # the median of two differences
    assert f"largest {steps[-1]:.3f}" in line
    ranked = sorted(medians, reverse=True)
    verdict = proc.stdout.strip().splitlines()[-1]
    assert verdict.startswith("ahead of ") and f"by {ranked[0] - ranked[1]:.3f}" in verdict
    assert ("a gain" in verdict and "not a gain" not in verdict) == (ranked[0] - ranked[1] > 0.001)


@pytest.mark.parametrize("args, message", [
    ([str(REPO / "src/lhopt_cli/policies/default.pt"), "--neighbours"], "error: --neighbours needs at least two passes"),
    ([str(REPO / "src/lhopt_cli/policies/default.pt"), "--spread", "nan"], "error: --spread must be a finite number"),
])
def test_select_policy_bad_noise_arguments_are_one_line(tmp_path, args, message):
    proc = script("select_policy.py", *args, "--grid-dir", str(tmp_path / "g"), timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith(message), proc.stderr


@pytest.mark.parametrize("args, message", [
    (["POLICY", "--suites", "test"], "error: validation.suite=test: the test suite is only reported on"),
    (["MISSING", "--suites", "smoke"], "error: MISSING: no such policy file"),
])
def test_select_policy_refuses_the_test_suite_and_missing_files_in_one_line(smoke_policy, tmp_path, args, message):
    names = {"POLICY": str(smoke_policy), "MISSING": str(tmp_path / "none.pt")}
    proc = script("select_policy.py", *[names.get(a, a) for a in args], "--grid-dir", str(tmp_path / "g"), timeout=300)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(message.replace("MISSING", names["MISSING"])), proc.stderr
    assert not (tmp_path / "g").exists()


def test_select_policy_with_a_file_as_grid_dir_is_one_line(smoke_policy, tmp_path):
    (tmp_path / "file").write_text("x")
    proc = script("select_policy.py", str(smoke_policy), "--suites", "smoke", "--grid-dir", str(tmp_path / "file"),
                  timeout=300)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"error: --grid-dir {tmp_path / 'file'}: "), proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--family", "nosuch", "--out", "OUT"], "error: unknown task_family 'nosuch'"),
    (["--name", "test"], "error: --name test / --out "),
    (["--per-kind", "0", "--out", "OUT"], "error: --per-kind must be at least 1 (got 0)"),
    (["--out", "MISSING_DIR"], "error: --out "),
])
def test_make_validation_suite_refuses_bad_input_in_one_line_and_never_touches_the_test_suite(tmp_path, args, message):
    test_suite = (REPO / "conf" / "suite" / "test.yaml").read_bytes()
    names = {"OUT": str(tmp_path / "v.yaml"), "MISSING_DIR": str(tmp_path / "none" / "v.yaml")}
    proc = script("make_validation_suite.py", *[names.get(a, a) for a in args], timeout=120)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(message), proc.stderr
    assert (REPO / "conf" / "suite" / "test.yaml").read_bytes() == test_suite
    assert not (tmp_path / "v.yaml").exists()


def test_make_validation_suite_samples_another_family(tmp_path):
    proc = script("make_validation_suite.py", "--family", "extended", "--per-kind", "1", "--name", "x",
                  "--out", str(tmp_path / "x.yaml"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    import yaml
    suite = yaml.safe_load((tmp_path / "x.yaml").read_text())
    assert suite["name"] == "x" and {m["task"] for m in suite["members"]} >= {"markov_lm", "sequence_classification"}


def test_export_policy_bad_input_is_one_line(smoke_run, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text((smoke_run / "config.yaml").read_text())
    (tmp_path / "run" / "checkpoint.pt").write_bytes((smoke_run / "policy.pt").read_bytes())
    for args, message in [
        ([str(tmp_path / "nonexist"), str(tmp_path / "e.pt")], "config.yaml: missing"),
        ([str(smoke_run), str(tmp_path / "folder")], "a folder; give the policy file's path"),
        ([str(smoke_run), str(tmp_path / "none" / "e.pt")], f"cannot be written (its folder {tmp_path / 'none'} does not exist)"),
        ([str(tmp_path / "run"), str(tmp_path / "e.pt")], "not a train-policy checkpoint (a policy file)"),
    ]:
        proc = script("export_policy.py", *args, timeout=120)
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr


def test_bundle_policy_checks_the_whole_bundle_before_writing(smoke_run, policy_with_protocol, tmp_path):
    out = tmp_path / "bundle"
    other = policy_with_protocol(decisions=8)
    proc = script("bundle_policy.py", str(smoke_run), "--policy", str(other), "--out", str(out), timeout=120)
    assert proc.returncode == 1 and "another observation protocol" in proc.stderr and not out.exists()
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "policy.pt"):
        (run / name).write_bytes((smoke_run / name).read_bytes())
    (run / "meta_train.csv").write_text("garbage\n\x00\x01")
    proc = script("bundle_policy.py", str(run), "--policy", str(run / "policy.pt"), "--out", str(out), timeout=120)
    assert proc.returncode == 1 and "not a readable meta-training log" in proc.stderr, proc.stderr
    assert not out.exists()  # nothing copied before the log was found unreadable
    (tmp_path / "file").write_text("x")
    proc = script("bundle_policy.py", str(smoke_run), "--policy", str(smoke_run / "policy.pt"), "--out",
                  str(tmp_path / "file"), timeout=120)
    assert proc.returncode == 1 and "a file, not a folder" in proc.stderr
    proc = script("bundle_policy.py", str(smoke_run), "--policy", str(smoke_run / "policy.pt"), "--out", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "default.pt").read_bytes() == (smoke_run / "policy.pt").read_bytes()


def test_grid_headroom_empty_grid_is_one_line_and_paper_only_grids_are_noted(tmp_path):
    from lhopt_cli.results.store import load
    stored = load(REPO / "benchmarks" / "grids" / "validation" / "results.parquet")
    empty = tmp_path / "grids" / "empty"
    empty.mkdir(parents=True)
    stored.iloc[:0].to_parquet(empty / "results.parquet")
    proc = script("grid_headroom.py", "--grids", str(tmp_path / "grids"), "--suite", "empty", timeout=120)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr
    proc = script("grid_headroom.py", "--suite", "validation_extended", timeout=300)
    assert proc.returncode == 0 and "holds only the paper's 5 learning rates" in proc.stderr, proc.stderr


def test_set_lr_decay_writes_a_copy_that_bundles_and_refuses_bad_input(smoke_run, tmp_path):
    from lhopt_cli.control.checkpoint import policy_protocol

    copy = tmp_path / "cosine.pt"
    proc = script("set_lr_decay.py", str(smoke_run / "policy.pt"), str(copy), "--lr-decay", "cosine", timeout=120)
    assert proc.returncode == 0, proc.stderr
    agent, meta = load_policy(copy)
    original, original_meta = load_policy(smoke_run / "policy.pt")
    assert policy_protocol(meta).lr_decay == "cosine" and meta["config"]["lr_decay_set_after_training"] == "cosine"
    assert policy_protocol(meta).decisions == policy_protocol(original_meta).decisions
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in agent.state_dict().items())
    out = tmp_path / "bundle"
    proc = script("bundle_policy.py", str(smoke_run), "--policy", str(copy), "--out", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr  # a decay set after training is the one field that may differ
    assert policy_protocol(load_policy(out / "default.pt")[1]).lr_decay == "cosine"
    assert "validation_speedup" not in meta["config"]  # a score measured under the old decay is not the copy's
    for source, out, decay, message in [(smoke_run / "policy.pt", tmp_path / "x.pt", "warm", "lr_decay must be one of"),
                                        (tmp_path / "missing.pt", tmp_path / "x.pt", "cosine", "no such policy file"),
                                        (smoke_run / "policy.pt", tmp_path / "no" / "x.pt", "cosine", "does not exist")]:
        proc = script("set_lr_decay.py", str(source), str(out), "--lr-decay", decay, timeout=120)
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "x.pt").exists()


def test_bench_scaling_fits_the_live_policy_and_the_replayed_schedule_and_resumes(tmp_path):
    out = tmp_path / "scaling"
    args = ("--out", str(out), "--widths", "8", "12", "16", "--smoke", "--bootstrap", "10")
    proc = script("bench_scaling.py", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the schedule is the one the policy wrote at the smallest width, replayed at every width
    assert (out / "schedule_smallest.json").read_bytes() == (out / "d8" / "schedule_char_lm_s0.json").read_bytes()
    for width in (8, 12, 16):
        methods = set(pd.read_parquet(out / f"d{width}" / "results.parquet").method)
        assert methods == {"lhopt", "replay"}, methods
    table = (out / "scaling.md").read_text()
    for method in ("lhopt", "replay"):  # the constant and both slope-aware speedups, each with its interval
        rows = [line for line in table.splitlines() if line.startswith(f"| {method} |")]
        assert len(rows) == 2 and rows[1].count("x [") == 3, rows
        points, sizes = rows[0].split("|")[2].split("(")  # the frontier's points and the model sizes they come from
        assert int(points) >= 3 and set(sizes.rstrip(") ").split(", ")) <= {"4,064", "7,120", "10,944"}, rows
    assert "| 16 | 10,944 |" in table and "2 widths" not in table
    assert (out / "scaling_curves.png").stat().st_size > 10_000
    again = script("bench_scaling.py", *args)  # everything stored: no run and no fit again
    assert again.returncode == 0, again.stderr[-2000:]
    assert "method runs (" in proc.stdout and "method runs (" not in again.stdout  # nothing run the second time
    assert "lhopt scaling-fit" not in again.stdout
    assert table == (out / "scaling.md").read_text() and table in again.stdout


@pytest.mark.parametrize("args, message", [
    (["--widths", "8", "10", "12"], "--widths: at least 3 different widths, each a multiple of 4"),
    (["--widths", "8", "8", "12"], "--widths: at least 3 different widths"),
    (["--bootstrap", "0"], "--bootstrap: at least 10 resamples"),
    (["--max-chars", "10"], "--max-chars: at least 20,000 characters"),
    (["--policy", "MISSING"], "--policy: MISSING: no such policy file"),
    (["--out", "FILE"], "--out: FILE is a file, not a folder"),
])
def test_bench_scaling_refuses_bad_input_in_one_line_before_any_run(tmp_path, args, message):
    (tmp_path / "file").write_text("x")
    names = {"MISSING": str(tmp_path / "missing.pt"), "FILE": str(tmp_path / "file")}
    out = ["--out", str(tmp_path / "s")] if "--out" not in args else []
    proc = script("bench_scaling.py", *out, *[names.get(a, a) for a in args], timeout=120)
    expected = message.replace("MISSING", names["MISSING"]).replace("FILE", names["FILE"])
    assert proc.returncode == 2 and expected in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert not (tmp_path / "s").exists() and "$ lhopt" not in proc.stdout


def test_bench_scaling_refuses_a_folder_of_another_experiment(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "experiment.json").write_text('{"widths": [8, 12, 16], "max_chars": 400000, "smoke": true, '
                                         '"policy_sha256": "0"}\n')
    proc = script("bench_scaling.py", "--out", str(out), "--widths", "4", "8", "12", "--smoke", timeout=120)
    assert proc.returncode == 2 and "holds an experiment with other settings (widths, policy_sha256)" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["experiment.json"]  # its smallest width's schedule is not replayed


def test_makefile_benchmark_targets_run_scripts_that_are_smoke_tested_here():
    dry = subprocess.run(["make", "-n", "bench", "bench-speedup", "bench-scaling"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert dry.returncode == 0, dry.stderr
    named = {word.rsplit("/", 1)[1] for word in dry.stdout.split() if word.startswith("scripts/")}
    assert {"bench_engine.py", "bench_overhead.py", "bench_speedup.py", "bench_scaling.py",
            "bench_scaling_fit.py"} <= named, named
    tested = open(__file__).read()
    for name in named:
        assert script_path(name).exists() and f'"{name}"' in tested, name


def test_bench_scaling_fit_times_the_real_cli_with_and_without_the_parametric_fit():
    proc = script("bench_scaling_fit.py", "--rows", "60", "200", "--bootstrap", "10", timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines()[2:]]
    assert [r[0].strip() for r in rows] == ["60", "200"] and all(r[1].strip() == "ok" for r in rows), proc.stdout
    assert all(float(r[2]) > 0 and float(r[3]) > 50 and float(r[4]) > 0 for r in rows)  # seconds, peak MB
    bad = script("bench_scaling_fit.py", "--rows", "5", timeout=60)
    assert bad.returncode == 2 and "--rows must each be at least 20" in bad.stderr


def test_interval_coverage_prints_the_share_of_laws_each_interval_holds():
    proc = script("interval_coverage.py", "--laws", "2", "--draws", "10", timeout=300)
    assert proc.returncode == 0, proc.stderr
    header, _, shares = proc.stdout.strip().splitlines()[-3:]
    assert header.split("|")[2:-1] == [f" {c} " for c in ("E", "A", "alpha", "B", "beta", "a", "b")]
    assert all(cell.strip() in ("0%", "50%", "100%") for cell in shares.split("|")[2:-1]), proc.stdout
    bad = script("interval_coverage.py", "--draws", "5", timeout=60)
    assert bad.returncode == 2 and "--draws at least 10" in bad.stderr


def test_select_policy_holds_beta1_and_switches_the_stall_rule_when_asked(tmp_path):
    sys.path.insert(0, str(REPO / "scripts" / "policy"))
    try:
        from select_policy import HeldHead
    finally:
        sys.path.remove(str(REPO / "scripts" / "policy"))
    from lhopt_cli.control.rollout import run_policy
    from lhopt_cli.control.checkpoint import policy_protocol

    agent, meta = load_policy(REPO / "src" / "lhopt_cli" / "policies" / "default.pt")
    task = {"name": "nqm", "dim": 20, "condition": 100.0, "noise": 0.3, "batch_size": 16, "steps": 200,
            "eval_points": policy_protocol(meta).eval_points}
    (free,) = run_policy(agent, task, [0], policy_protocol(meta), greedy=True)
    (held,) = run_policy(HeldHead(agent, "one_minus_beta1"), task, [0], policy_protocol(meta), greedy=True)
    assert {row["beta1"] for row in held.decisions} == {0.9}
    assert [row["lr"] for row in held.decisions][:1] == [row["lr"] for row in free.decisions][:1]  # the other heads act
    proc = script("select_policy.py", str(REPO / "src" / "lhopt_cli" / "policies" / "default.pt"), "--suites", "smoke",
                  "--grid-dir", str(tmp_path / "g"), "--hold-beta1", "--stall-rule", "off", timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1].startswith("best: "), proc.stderr[-2000:]
    bad = script("select_policy.py", "x.pt", "--stall-rule", "never", timeout=60)
    assert bad.returncode == 2 and "invalid choice: 'never'" in bad.stderr


def test_scale_check_scores_the_policy_at_each_scale_against_the_unscaled_grid(tmp_path):
    proc = script("scale_check.py", "--suite", "smoke", "--scales", "0.01", "--grid-dir", str(tmp_path / "g"),
                  "--markdown", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in proc.stdout.splitlines() if line.startswith("| 0.01") or line.startswith("| 1 ")}
    assert set(rows) == {"0.01", "1"}  # s = 1 is always scored: the yardstick
    medians = {s: float(row[0].rstrip("x")) for s, row in rows.items()}
    for s, row in rows.items():
        members = [float(v) for v in row[2:]]
        assert len(members) == 2 and abs(medians[s] - sum(members) / 2) < 0.01
        assert float(row[1]) == pytest.approx(medians[s] / medians["1"], abs=0.01)
    assert rows["0.01"][2:] != rows["1"][2:]  # the scale reached the runs
    assert proc.stdout.strip().splitlines()[-1].startswith("lowest median against s = 1: ")


@pytest.mark.parametrize("args, message", [
    (["--scales", "0"], "error: --scales must be finite positive numbers"),
    (["--suite", "test"], "error: validation.suite=test: the test suite is only reported on"),
])
def test_scale_check_bad_input_is_one_line(tmp_path, args, message):
    proc = script("scale_check.py", *args, "--grid-dir", str(tmp_path / "g"), timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith(message) and len(proc.stderr.strip().splitlines()) == 1


def test_decision_trace_reads_the_lr_against_the_best_and_counts_the_controllers_goals(tmp_path):
    sys.path.insert(0, str(REPO / "scripts" / "policy"))
    try:
        from decision_trace import trace
    finally:
        sys.path.remove(str(REPO / "scripts" / "policy"))
    decisions = [{"step": s, "lr": lr} for s, lr in [(0, 2e-3), (10, 4e-3), (20, 8e-3), (40, 8e-3), (60, 4e-3), (80, 4e-3)]]
    row = trace(decisions, total_steps=100, best_lr=1e-3)
    assert row == {"first_lr": 2e-3, "changes": 3, "down": 1, "last_change": 60, "lr_at_quarter": 8e-3,
                   "above_at_quarter": True, "down_after_quarter": True, "final_lr": 4e-3, "within": False}
    held = trace(decisions[:3], total_steps=100, best_lr=3e-3)
    assert held["above_at_quarter"] and not held["down_after_quarter"] and held["within"]  # 8e-3 within 3x of 3e-3
    proc = script("decision_trace.py", "--suite", "smoke", "--grid-dir", str(tmp_path / "g"), "--markdown", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert sum(line.startswith("| nqm_small | 0 |") or line.startswith("| mlp_digits_small | 0 |") for line in lines) == 2
    assert lines[-2].startswith("down after the first quarter") and lines[-1].startswith("final level within 3x")


def test_seeds_needed_counts_only_an_exclusion_that_holds_up_to_all_the_seeds():
    sys.path.insert(0, str(REPO / "scripts" / "bench"))
    try:
        from bench_speedup import seeds_needed
    finally:
        sys.path.remove(str(REPO / "scripts" / "bench"))

    def summary(ratios_per_seed):
        return pd.DataFrame([{"task": f"t{t}", "seed": seed, "method": m, "speedup": (r if m == "lhopt" else 1.0)}
                             for seed, r in enumerate(ratios_per_seed) for t in range(6)
                             for m in ("lhopt", "fixed_default")])

    assert seeds_needed(summary([2.0, 2.0, 2.0])) == 1
    assert seeds_needed(summary([2.0, 0.5, 0.5])) is None  # the first seed alone excluded 1.0; all three do not


def test_the_timing_and_profiling_scripts_run_in_a_smoke_form():
    proc = script("time_tasks.py", "nqm", "--max-steps", "5", timeout=120)
    assert proc.returncode == 0 and proc.stdout.splitlines()[1].split()[:2] == ["nqm", "5"], proc.stdout + proc.stderr
    assert script("time_tasks.py", "nope", timeout=60).stderr.startswith("error: unknown task 'nope'")
    proc = script("profile_batched_step.py", "nqm", "2", "--steps", "2", timeout=120)
    assert proc.returncode == 0 and "nqm K=2: 2 batched steps" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("path", sorted((REPO / "scripts").glob("*/*.py")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_script_answers_help_is_listed_in_scripts_readme_and_is_run_by_a_test(path, monkeypatch, capsys):
    import runpy

    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    monkeypatch.syspath_prepend(str(path.parent))
    with pytest.raises(SystemExit) as done:  # in this process: torch is imported once, not once per script
        runpy.run_path(str(path), run_name="__main__")
    assert done.value.code in (0, None) and capsys.readouterr().out.startswith("usage: ")
    assert f"| {path.name} |" in (REPO / "scripts" / "README.md").read_text(), f"{path.name} is not in scripts/README.md"
    tested = "".join(test.read_text() for test in (REPO / "tests").glob("test_*.py"))
    assert f'"{path.name}"' in tested or f"/{path.name}" in tested, f"no test runs {path.name}"
