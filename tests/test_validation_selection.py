"""Checkpoint selection on the validation suite inside `lhopt train-policy` (validation.py):
scores logged per validation pass, best.pt holding the best, stored grids read and never
recomputed, the test suite refused."""
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from rich.console import Console

from conftest import LHOPT, REPO, lhopt_env
from lhopt_cli.commands import baseline_grid
from lhopt_cli.commands import train_policy
from lhopt_cli.config.compose import ConfigError, compose, make_run_dir
from lhopt_cli.control.checkpoint import load_policy
from lhopt_cli.commands.validation import ValidationSuite, refuse_test_tasks

SMOKE = {"max_steps": 8, "eval_points": 4, "valid_size": 128}


def smoke_protocol():
    return train_policy.training_protocol(compose("train_policy", ["debug=smoke"]).controller)


def test_best_pt_holds_the_policy_of_the_best_validation_score_and_survives_a_resume(tmp_path):
    overrides = ["debug=smoke", "ppo.iterations=4", "checkpoint_every=2", "validation.every=2",
                 "validation.suite=smoke", "validation.seeds=[0,1]", "validation.keep=true", f"run_dir={tmp_path}"]
    cfg = compose("train_policy", overrides[:1] + ["ppo.iterations=2"] + overrides[2:])
    make_run_dir(cfg)
    train_policy.run(train_policy.plan(cfg, tmp_path), Console(quiet=True))  # iterations 1-2, then resumed to 4
    cfg = compose("train_policy", [*overrides, "resume=true"])
    train_policy.run(train_policy.plan(cfg, tmp_path), Console(quiet=True))
    log = pd.read_csv(tmp_path / "meta_train.csv")
    scored = log.dropna(subset=["validation_speedup"])
    assert scored.iteration.tolist() == [2, 4] and (scored.validation_s > 0).all()
    assert log.validation_speedup.isna().sum() == 2  # iterations 1 and 3 are not validated
    agent, meta = load_policy(tmp_path / "best.pt")
    best_row = scored.loc[scored.validation_speedup.idxmax()]  # the first of equal scores
    assert meta["config"]["trained_iterations"] == best_row.iteration
    assert meta["config"]["validation_speedup"] == pytest.approx(best_row.validation_speedup)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["best"] == {"iteration": int(best_row.iteration), "validation_speedup": pytest.approx(best_row.validation_speedup),
                             "suite": "smoke", "seeds": [0, 1], "weights": "raw"}
    # validation.keep: every pass's policies, each recording its iteration and its score in the log
    passes = sorted(p.name for p in (tmp_path / "passes").iterdir())
    assert [p for p in passes if p.endswith("_raw.pt")] == ["iteration_00002_raw.pt", "iteration_00004_raw.pt"]
    for row in scored.itertuples():
        _, kept = load_policy(tmp_path / "passes" / f"iteration_{row.iteration:05d}_raw.pt")
        assert kept["config"]["trained_iterations"] == row.iteration
        assert kept["config"]["validation_speedup"] == pytest.approx(row.validation_speedup)
    # the file scores what the log says when the suite scores it again (greedy runs are deterministic)
    suite = ValidationSuite("smoke", [0, 1], smoke_protocol(), tmp_path / "validation_grid", debug=SMOKE,
                            stored=tmp_path / "none", console=Console(quiet=True))
    score, per_member = suite.score(agent)
    assert set(per_member) == {"nqm_small", "mlp_digits_small"}
    assert score == pytest.approx(best_row.validation_speedup)
    # sampled actions are seeded: the same score twice
    assert suite.score(agent, greedy=False) == suite.score(agent, greedy=False)
    # a resume that would score on other tasks is refused before anything runs
    with pytest.raises(ConfigError, match="best.pt was chosen on validation.suite=smoke with validation.seeds=\\[0, 1\\]"):
        train_policy.plan(compose("train_policy", [*(o for o in overrides if not o.startswith("validation.suite")),
                                                   "validation.suite=validation", "resume=true"]), tmp_path)
    # the meta-training summary shows the validation scores
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "policy" / "meta_train_summary.py"), str(tmp_path), "--block", "2",
                           "--png", str(tmp_path / "curve.png")], capture_output=True, text=True, env=lhopt_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "validation speedup |" in proc.stdout and f"{scored.validation_speedup.iloc[-1]:.3f}x |" in proc.stdout
    # the validation-chosen policy bundles with its config, log and curve
    bundle = subprocess.run([sys.executable, str(REPO / "scripts" / "policy" / "bundle_policy.py"), str(tmp_path), "--out",
                             str(tmp_path / "bundle")], capture_output=True, text=True, env=lhopt_env(), timeout=120)
    assert bundle.returncode == 0, bundle.stderr[-2000:]
    assert (tmp_path / "bundle" / "default.pt").read_bytes() == (tmp_path / "best.pt").read_bytes()
    assert (tmp_path / "bundle" / "default_config.yaml").read_text() == (tmp_path / "config.yaml").read_text()
    assert (tmp_path / "bundle" / "default_meta_train.csv").read_text() == (tmp_path / "meta_train.csv").read_text()
    assert (tmp_path / "bundle" / "default_meta_training.png").stat().st_size > 1000
    assert f"validation {meta['config']['validation_speedup']:.3f}x" in bundle.stdout
    chosen = subprocess.run([sys.executable, str(REPO / "scripts" / "policy" / "bundle_policy.py"), str(tmp_path), "--policy",
                             str(tmp_path / "policy.pt"), "--out", str(tmp_path / "chosen")],
                            capture_output=True, text=True, env=lhopt_env(), timeout=120)
    assert chosen.returncode == 0, chosen.stderr[-2000:]
    assert (tmp_path / "chosen" / "default.pt").read_bytes() == (tmp_path / "policy.pt").read_bytes()
    (tmp_path / "best.pt").unlink()
    refused = subprocess.run([sys.executable, str(REPO / "scripts" / "policy" / "bundle_policy.py"), str(tmp_path), "--out",
                              str(tmp_path / "bundle")], capture_output=True, text=True, env=lhopt_env(), timeout=120)
    assert refused.returncode == 1 and refused.stderr.strip().count("\n") == 0 and "best.pt: missing" in refused.stderr


def test_stored_grids_are_read_and_never_recomputed_or_written(tmp_path, run_cli, smoke_policy, monkeypatch):
    stored = tmp_path / "stored"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "suites" / "make_reference_grids.py"), "--suites", "smoke",
                           "--paper-only", "--seeds", "0", "--workers", "1", "--out", str(stored), "debug=smoke"],
                          capture_output=True, text=True, env=lhopt_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = {p: p.stat().st_mtime_ns for p in (stored / "smoke").iterdir()}
    own = tmp_path / "own"
    suite = ValidationSuite("smoke", [0], smoke_protocol(), own, debug=SMOKE, stored=stored / "smoke",
                            console=Console(quiet=True))
    assert not own.exists()  # every run was stored: nothing computed
    assert {p: p.stat().st_mtime_ns for p in (stored / "smoke").iterdir()} == before
    assert [m.grid_curves.run_id.nunique() for m in suite.members] == [35, 35]
    # one seed more than stored: only that seed's runs are computed, into the run's own grid store
    suite = ValidationSuite("smoke", [0, 1], smoke_protocol(), own, debug=SMOKE, stored=stored / "smoke",
                            console=Console(quiet=True))
    runs = pd.read_parquet(own / "runs.parquet")
    assert len(runs) == 70 and set(runs.seed) == {1}
    assert [m.grid_curves.run_id.nunique() for m in suite.members] == [70, 70]
    assert json.loads((stored / "smoke" / "MANIFEST.json").read_text())["calls"][0]["members"] == [
        "nqm_small", "mlp_digits_small"]
    # `lhopt evaluate suite=...` reads the suite's stored grids the same way: only the policy runs
    monkeypatch.setattr(baseline_grid, "STORED_GRIDS", stored)
    result = run_cli("evaluate", "debug=smoke", "suite=smoke", f"policy={smoke_policy}", "seeds=[0]", "extended_lrs=[]",
                     "extra_baselines=[]", f"run_dir={tmp_path / 'eval'}")
    assert result.exit_code == 0, result.output
    assert result.output.count("35 of 35 grid runs read from") == 2 and not (tmp_path / "eval" / "grid").exists()
    assert {p: p.stat().st_mtime_ns for p in (stored / "smoke").iterdir()} == before
    summary = pd.read_csv(tmp_path / "eval" / "summary.csv")
    assert list(summary.task.unique()) == ["nqm_small", "mlp_digits_small"] and summary.speedup.notna().all()


@pytest.mark.parametrize("args, message", [
    (["validation.suite=test"], "validation.suite=test: the test suite is only reported on"),
    (["validation.every=-1"], "validation.every must be at least 0"),
    (["validation.every=0", "validation.suite=test"], "validation.suite=test"),  # refused even with no pass
    (["validation.seeds=[-1]"], "validation.seeds must lie in [0, 2^32) (got -1)"),
    (["validation.seeds=[]"], "validation.seeds must list at least one seed"),
])
def test_selection_never_reads_the_test_suite_and_bad_settings_are_one_line(tmp_path, args, message):
    proc = subprocess.run([str(LHOPT), "train-policy", "debug=smoke", "validation.every=1", *args,
                           f"run_dir={tmp_path / 'run'}"], capture_output=True, text=True, env=lhopt_env(), timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), proc.stderr[-2000:]
    assert not (tmp_path / "run" / "meta_train.csv").exists()


def test_a_validation_suite_holding_a_test_task_is_refused():
    refuse_test_tasks("smoke", [{"id": "a", "task": "nqm", "params": {}}])  # family tasks pass
    with pytest.raises(ConfigError, match=r"validation.suite=mine holds test-suite tasks \(char_lm, code_lm\)"):
        refuse_test_tasks("mine", [{"id": "a", "task": "code_lm", "params": {}}, {"id": "b", "task": "char_lm", "params": {}},
                                   {"id": "c", "task": "nqm", "params": {}}])
